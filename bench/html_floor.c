/* The floor of the html section of `make bench` (bench/html_bench.lua): libxml2 called
   directly, as forage.html and lxml call it, with no binding in between.

       build/html_floor DIR ROUNDS [LISTS]

   Reads DIR/001.html, DIR/002.html ... into memory (not timed), makes one untimed pass that
   checksums the strings found, then times ROUNDS rounds of: htmlReadMemory each page with
   its URL, evaluate the two XPaths, count the results, free. Prints one JSON line, with the
   process's CPU seconds of the timed rounds as "cpu". With LISTS (the crawl section's floor,
   bench/crawl_bench.lua), pages 1..LISTS are list pages and get only the href XPath, the
   others detail pages and get only the directors XPath, as a crawler queries them. Built by
   the bench: cc -O2 $(xml2-config --cflags) -o build/html_floor bench/html_floor.c $(xml2-config --libs) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libxml/HTMLparser.h>
#include <libxml/xpath.h>

#define URL_PREFIX "https://ssr1.scrape.center/page/"
#define OPTIONS (HTML_PARSE_NONET | HTML_PARSE_NOERROR | HTML_PARSE_NOWARNING | HTML_PARSE_RECOVER)

static const xmlChar *const XPATHS[2] = {
    (const xmlChar *)"//a[@class=\"name\"]/@href",
    (const xmlChar *)"//div[@class=\"directors el-row\"]//p/text()",
};

typedef struct page {
    char *body;
    int len;
    char url[64];
} page;

static double clock_seconds(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void silent(void *ctx, const char *msg, ...) {
    (void)ctx;
    (void)msg;
}

/* Reads path whole; NULL when it cannot be opened. */
static char *slurp(const char *path, int *len) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char *buf = malloc((size_t)n + 1);
    if (buf == NULL || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "html_floor: cannot read %s\n", path);
        exit(1);
    }
    fclose(f);
    *len = (int)n;
    return buf;
}

/* The string a result node stands for, as forage and lxml return it, without copying. */
static size_t node_bytes(xmlNodePtr n) {
    if (n->type == XML_ATTRIBUTE_NODE) n = n->children;
    return n && n->content ? strlen((const char *)n->content) : 0;
}

/* Parses one page and runs the XPaths in [from, to); adds the counts (and the string bytes when bytes). */
static void one(const page *p, int from, int to, long counts[2], long *bytes) {
    htmlDocPtr doc = htmlReadMemory(p->body, p->len, p->url, NULL, OPTIONS);
    if (doc == NULL) { fprintf(stderr, "html_floor: cannot parse %s\n", p->url); exit(1); }
    xmlXPathContextPtr ctx = xmlXPathNewContext(doc);
    for (int k = from; k < to; k++) {
        xmlXPathObjectPtr obj = xmlXPathEvalExpression(XPATHS[k], ctx);
        if (obj == NULL) { fprintf(stderr, "html_floor: bad xpath\n"); exit(1); }
        xmlNodeSetPtr set = obj->nodesetval;
        int nr = set ? set->nodeNr : 0;
        counts[k] += nr;
        if (bytes)
            for (int i = 0; i < nr; i++) *bytes += (long)node_bytes(set->nodeTab[i]);
        xmlXPathFreeObject(obj);
    }
    xmlXPathFreeContext(ctx);
    xmlFreeDoc(doc);
}

int main(int argc, char **argv) {
    if (argc != 3 && argc != 4) { fprintf(stderr, "usage: %s DIR ROUNDS [LISTS]\n", argv[0]); return 2; }
    int rounds = atoi(argv[2]);
    int lists = argc == 4 ? atoi(argv[3]) : -1;
    LIBXML_TEST_VERSION
    xmlSetGenericErrorFunc(NULL, silent);
    page *pages = NULL;
    int n = 0;
    for (;;) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%03d.html", argv[1], n + 1);
        int len;
        char *body = slurp(path, &len);
        if (body == NULL) break;
        pages = realloc(pages, sizeof *pages * (size_t)(n + 1));
        if (pages == NULL) return 1;
        pages[n].body = body;
        pages[n].len = len;
        snprintf(pages[n].url, sizeof pages[n].url, "%s%03d", URL_PREFIX, n + 1);
        n++;
    }
    if (n == 0) { fprintf(stderr, "html_floor: no pages in %s\n", argv[1]); return 1; }
    long warm[2] = {0, 0}, bytes = 0, counts[2] = {0, 0};
/* The XPaths page i gets: both, or with LISTS the one a crawler runs on it. */
#define FROM(i) (lists < 0 ? 0 : (i) < lists ? 0 : 1)
#define TO(i) (lists < 0 ? 2 : (i) < lists ? 1 : 2)
    for (int i = 0; i < n; i++) one(&pages[i], FROM(i), TO(i), warm, &bytes);   /* untimed: warm-up, checksum */
    double t0 = clock_seconds(CLOCK_MONOTONIC), c0 = clock_seconds(CLOCK_PROCESS_CPUTIME_ID);
    for (int r = 0; r < rounds; r++)
        for (int i = 0; i < n; i++) one(&pages[i], FROM(i), TO(i), counts, NULL);
    double seconds = clock_seconds(CLOCK_MONOTONIC) - t0, cpu = clock_seconds(CLOCK_PROCESS_CPUTIME_ID) - c0;
    long total = (long)n * rounds;
    printf("{\"seconds\":%.9f,\"cpu\":%.9f,\"pages\":%ld,\"rate\":%.3f,\"hrefs\":%ld,\"directors\":%ld,\"bytes\":%ld,"
           "\"libxml2\":\"%s\"}\n",
           seconds, cpu, total, (double)total / seconds, counts[0] / rounds, counts[1] / rounds, bytes,
           xmlParserVersion);
    for (int i = 0; i < n; i++) free(pages[i].body);
    free(pages);
    xmlCleanupParser();
    return 0;
}
