/* forage.html: HTML documents parsed by libxml2, queried with XPath and CSS.
   A forage.Document owns the libxml2 tree and one cached XPath context; a forage.Node
   points into that tree and keeps its document alive through its user value. */
#include <dlfcn.h>
#include <limits.h>
#include <string.h>
#include <strings.h>

#include <libxml/HTMLparser.h>
#include <libxml/HTMLtree.h>
#include <libxml/encoding.h>
#include <libxml/parser.h>
#include <libxml/parserInternals.h>
#include <libxml/uri.h>
#include <libxml/xmlerror.h>
#include <libxml/xpath.h>
#include <libxml/xpathInternals.h>

#include "args.h"
#include "core.h"
#include "lauxlib.h"
#include "luatype.h"

#define DOCUMENT_TYPE "forage.Document"
#define NODE_TYPE "forage.Node"
#define CSS_COMPILE_KEY "forage.html.css_compile"

/* Tolerant and offline: no network, no error output, recover from broken markup.
   Blank text nodes are kept (NOBLANKS would drop the spaces between inline elements).
   HUGE lifts libxml2's nesting cap of 256 levels, past which it dropped the rest of the page
   without a word (real pages nest hundreds of unclosed <font>): the work stays bounded by
   the size of the body (http's max_bytes), and every walk of the tree used here
   (XPath axes, text, serialising, freeing) is iterative in libxml2, not recursive. */
#define PARSE_OPTIONS (HTML_PARSE_NONET | HTML_PARSE_NOERROR | HTML_PARSE_NOWARNING | HTML_PARSE_RECOVER | XML_PARSE_HUGE)

typedef struct document {
    htmlDocPtr doc;             /* NULL once closed */
    xmlXPathContextPtr xpath;   /* created on first query */
} document;

typedef struct node {
    xmlNodePtr node;
    document *owner;            /* kept alive by the node's user value 1 */
} node;

/* libxml2 reports through these; a crawler sees broken HTML all day and wants no stderr. */
static void silent_generic_error(void *ctx, const char *msg, ...) {
    (void)ctx;
    (void)msg;
}

static void silent_structured_error(void *ctx, xmlErrorPtr err) {
    (void)ctx;
    (void)err;
}

static document *check_document(lua_State *L, int i) {
    document *d = luaL_checkudata(L, i, DOCUMENT_TYPE);
    if (d->doc == NULL) type_closed_error(L, DOCUMENT_TYPE);
    return d;
}

static node *check_node(lua_State *L, int i) {
    node *n = luaL_checkudata(L, i, NODE_TYPE);
    if (n->owner->doc == NULL) luaL_error(L, "attempt to use a node of a closed document");
    return n;
}

/* A new closed document: a memory error while opening leaves nothing to free. */
static document *new_document(lua_State *L) {
    document *d = lua_newuserdatauv(L, sizeof *d, 0);
    d->doc = NULL;
    d->xpath = NULL;
    luaL_setmetatable(L, DOCUMENT_TYPE);
    return d;
}

/* Pushes a node userdata for n, owned by the document at index doc_index. */
static void push_node(lua_State *L, int doc_index, xmlNodePtr n) {
    document *d = lua_touserdata(L, doc_index);
    node *u = lua_newuserdatauv(L, sizeof *u, 1);
    u->node = n;
    u->owner = d;
    lua_pushvalue(L, doc_index);
    lua_setiuservalue(L, -2, 1);
    luaL_setmetatable(L, NODE_TYPE);
}

/* Pushes the string value of a non-element node (text, attribute, comment ...). */
static void push_node_string(lua_State *L, xmlNodePtr n) {
    switch (n->type) {
    case XML_TEXT_NODE:
    case XML_CDATA_SECTION_NODE:
    case XML_COMMENT_NODE:
    case XML_PI_NODE:
        lua_pushstring(L, n->content ? (const char *)n->content : "");
        return;
    case XML_ATTRIBUTE_NODE:
        /* The usual attribute is one text child: no copy needed. */
        if (n->children == NULL) { lua_pushliteral(L, ""); return; }
        if (n->children->type == XML_TEXT_NODE && n->children->next == NULL) {
            lua_pushstring(L, n->children->content ? (const char *)n->children->content : "");
            return;
        }
        break;
    case XML_NAMESPACE_DECL: {
        xmlNsPtr ns = (xmlNsPtr)n;   /* not an xmlNode: only href is safe to read */
        lua_pushstring(L, ns->href ? (const char *)ns->href : "");
        return;
    }
    default:
        break;
    }
    xmlChar *s = xmlXPathCastNodeToString(n);
    lua_pushstring(L, s ? (const char *)s : "");
    xmlFree(s);
}

/* Under lua_pcall: (xpath object, document) -> list of the results. */
static int push_xpath_results(lua_State *L) {
    xmlXPathObjectPtr obj = lua_touserdata(L, 1);
    switch (obj->type) {
    case XPATH_NODESET: {
        xmlNodeSetPtr set = obj->nodesetval;
        int count = set ? set->nodeNr : 0;
        lua_createtable(L, count, 0);
        for (int i = 0; i < count; i++) {
            xmlNodePtr n = set->nodeTab[i];
            if (n->type == XML_ELEMENT_NODE || n->type == XML_HTML_DOCUMENT_NODE ||
                n->type == XML_DOCUMENT_NODE)
                push_node(L, 2, n);
            else
                push_node_string(L, n);
            lua_rawseti(L, -2, i + 1);
        }
        return 1;
    }
    case XPATH_STRING:
        lua_createtable(L, 1, 0);
        lua_pushstring(L, obj->stringval ? (const char *)obj->stringval : "");
        break;
    case XPATH_NUMBER: {
        lua_Integer k;
        lua_createtable(L, 1, 0);
        if (lua_numbertointeger(obj->floatval, &k) && (lua_Number)k == obj->floatval) lua_pushinteger(L, k);
        else lua_pushnumber(L, obj->floatval);
        break;
    }
    case XPATH_BOOLEAN:
        lua_createtable(L, 1, 0);
        lua_pushboolean(L, obj->boolval);
        break;
    default:
        lua_createtable(L, 0, 0);
        return 1;
    }
    lua_rawseti(L, -2, 1);
    return 1;
}

/* The document's XPath context, created once; raises on memory errors. */
static xmlXPathContextPtr document_context(lua_State *L, document *d) {
    if (d->xpath == NULL) {
        d->xpath = xmlXPathNewContext(d->doc);
        if (d->xpath == NULL) luaL_error(L, "not enough memory");
        d->xpath->error = silent_structured_error;
    }
    return d->xpath;
}

/* Evaluates expr with context node at; returns NULL when the expression is invalid. */
static xmlXPathObjectPtr xpath_eval(lua_State *L, document *d, xmlNodePtr at, const char *expr) {
    xmlXPathContextPtr ctx = document_context(L, d);
    ctx->node = at;
    ctx->contextSize = -1;
    ctx->proximityPosition = -1;
    return xmlXPathEvalExpression((const xmlChar *)expr, ctx);
}

/* Pushes the results of expr evaluated at `at` (document at doc_index); raises quoting
   expr when it is invalid. The XPath object is freed even when Lua runs out of memory. */
static int xpath_query(lua_State *L, int doc_index, xmlNodePtr at, const char *expr) {
    document *d = lua_touserdata(L, doc_index);
    xmlXPathObjectPtr obj = xpath_eval(L, d, at, expr);
    if (obj == NULL) {
        lua_pushstring(L, expr);
        return luaL_error(L, "xpath: invalid expression %s", args_show(L, -1));
    }
    lua_pushcfunction(L, push_xpath_results);
    lua_pushlightuserdata(L, obj);
    lua_pushvalue(L, doc_index);
    int status = lua_pcall(L, 2, 1, 0);
    xmlXPathFreeObject(obj);
    if (status != LUA_OK) return lua_error(L);
    return 1;
}

/* The string at i (not a number), raising with nul_message when it holds a NUL, which
   libxml2 would cut it at. */
static const char *check_c_string(lua_State *L, int i, const char *nul_message) {
    luaL_checktype(L, i, LUA_TSTRING);
    size_t len;
    const char *s = lua_tolstring(L, i, &len);
    luaL_argcheck(L, strlen(s) == len, i, nul_message);
    return s;
}

/* The XPath expression at i: a string without NUL (libxml2 would run the part before it). */
static const char *check_expression(lua_State *L, int i) {
    return check_c_string(L, i, "expression contains a NUL byte");
}

/* Replaces the CSS selector at index i by its XPath translation (forage.css, cached there),
   for a query from a node when from_node is set, else from the document. */
static const char *css_to_xpath(lua_State *L, int i, int from_node) {
    luaL_checktype(L, i, LUA_TSTRING);
    if (lua_getfield(L, LUA_REGISTRYINDEX, CSS_COMPILE_KEY) != LUA_TFUNCTION) {
        lua_pop(L, 1);
        lua_getglobal(L, "require");
        lua_pushliteral(L, "forage.css");
        lua_call(L, 1, 1);
        lua_getfield(L, -1, "compile");
        lua_remove(L, -2);
        luaL_checktype(L, -1, LUA_TFUNCTION);
        lua_pushvalue(L, -1);
        lua_setfield(L, LUA_REGISTRYINDEX, CSS_COMPILE_KEY);
    }
    lua_pushvalue(L, i);
    lua_pushboolean(L, from_node);
    lua_call(L, 2, 1);
    if (!lua_isstring(L, -1)) luaL_error(L, "css: compiler returned no string");
    lua_replace(L, i);
    return lua_tostring(L, i);
}

/* The string argument at i, or NULL when it is none or nil; raises for another type (a
   number is not read as a string) or an embedded NUL (libxml2 would cut it there). */
static const char *opt_string_arg(lua_State *L, int i) {
    return lua_isnoneornil(L, i) ? NULL : check_c_string(L, i, "string contains a NUL byte");
}

/* html.parse(body [, url [, encoding]]) -> document. The encoding defaults to the page's
   <meta charset>, else UTF-8. Never fails on bad markup: at worst the document is empty.
   Returns nil, message, "malformed" when libxml2 gives up before the end of the page (a
   nesting cap of libxml2 2.11 and later, even with HUGE): a part of a page is never
   passed off as the whole. */
static int html_parse(lua_State *L) {
    size_t len;
    luaL_checktype(L, 1, LUA_TSTRING);
    const char *body = lua_tolstring(L, 1, &len);
    const char *url = opt_string_arg(L, 2);
    const char *encoding = opt_string_arg(L, 3);
    luaL_argcheck(L, len <= INT_MAX, 1, "body too large");
    if (encoding != NULL) {
        xmlCharEncodingHandlerPtr handler = xmlFindCharEncodingHandler(encoding);
        if (handler == NULL)
            return luaL_argerror(L, 3, lua_pushfstring(L, "unknown encoding %s", args_show(L, 3)));
        xmlCharEncCloseFunc(handler);
    }
    document *d = new_document(L);
    if (len > 0) {
        /* htmlReadMemory's steps, keeping the context to ask whether the parser stopped */
        htmlParserCtxtPtr ctxt = xmlCreateMemoryParserCtxt(body, (int)len);
        if (ctxt == NULL) return luaL_error(L, "not enough memory");
        if (ctxt->sax != NULL) memcpy(ctxt->sax, &htmlDefaultSAXHandler, sizeof(xmlSAXHandlerV1));
        htmlCtxtUseOptions(ctxt, PARSE_OPTIONS);
        if (encoding != NULL) {
            xmlCharEncodingHandlerPtr handler = xmlFindCharEncodingHandler(encoding);
            if (handler != NULL) {
                xmlSwitchToEncoding(ctxt, handler);
                if (ctxt->input->encoding != NULL) xmlFree((xmlChar *)ctxt->input->encoding);
                ctxt->input->encoding = xmlStrdup((const xmlChar *)encoding);
            }
        }
        if (url != NULL && ctxt->input->filename == NULL)
            ctxt->input->filename = (char *)xmlStrdup((const xmlChar *)url);
        htmlParseDocument(ctxt);
        d->doc = ctxt->myDoc;
        ctxt->myDoc = NULL;
        int halted = ctxt->disableSAX != 0;   /* xmlHaltParser: the rest of the input was dropped */
        htmlFreeParserCtxt(ctxt);
        if (halted) {
            xmlFreeDoc(d->doc);
            d->doc = NULL;
            return args_fail(L, "malformed", "html: libxml2 stopped before the end of the page (%d bytes)", (int)len);
        }
    }
    if (d->doc == NULL) {   /* empty input, or nothing libxml2 could make a tree of */
        d->doc = htmlNewDocNoDtD(NULL, NULL);
        if (d->doc == NULL) return luaL_error(L, "not enough memory");
        if (url != NULL) d->doc->URL = xmlStrdup((const xmlChar *)url);
    }
    return 1;
}

/* doc:xpath(expr) -> list of nodes (elements), strings (text, attributes), or the one
   string/number/boolean an expression like count() yields. */
static int document_xpath(lua_State *L) {
    document *d = check_document(L, 1);
    const char *expr = check_expression(L, 2);
    return xpath_query(L, 1, (xmlNodePtr)d->doc, expr);
}

/* doc:css(selector) -> as doc:xpath, for the selector's XPath translation. */
static int document_css(lua_State *L) {
    document *d = check_document(L, 1);
    const char *expr = css_to_xpath(L, 2, 0);
    return xpath_query(L, 1, (xmlNodePtr)d->doc, expr);
}

/* True when href (already trimmed) uses a scheme that is no page to fetch. */
static int href_skipped(const char *href) {
    return strncasecmp(href, "javascript:", 11) == 0 || strncasecmp(href, "mailto:", 7) == 0;
}

/* Under lua_pcall: (href attributes, base or nil) -> list of absolute, distinct URLs. */
static int push_links(lua_State *L) {
    xmlXPathObjectPtr obj = lua_touserdata(L, 1);
    const xmlChar *base = lua_touserdata(L, 2);
    xmlNodeSetPtr set = obj->type == XPATH_NODESET ? obj->nodesetval : NULL;
    int count = set ? set->nodeNr : 0, n = 0;
    lua_newtable(L);   /* 3: the list */
    lua_newtable(L);   /* 4: seen */
    for (int i = 0; i < count; i++) {
        size_t len;
        push_node_string(L, set->nodeTab[i]);
        const char *href = lua_tolstring(L, -1, &len);
        while (len > 0 && strchr(" \t\r\n\f", href[len - 1])) len--;
        while (len > 0 && strchr(" \t\r\n\f", *href)) href++, len--;
        lua_pushlstring(L, href, len);
        href = lua_tostring(L, -1);
        if (!href_skipped(href)) {
            xmlChar *url = xmlBuildURI((const xmlChar *)href, base);
            if (url != NULL) {
                lua_pushstring(L, (const char *)url);
                xmlFree(url);
                lua_pushvalue(L, -1);
                if (lua_rawget(L, 4) == LUA_TNIL) {
                    lua_pushvalue(L, -2);
                    lua_rawseti(L, 3, ++n);
                    lua_pushvalue(L, -2);
                    lua_pushboolean(L, 1);
                    lua_rawset(L, 4);
                }
                lua_pop(L, 2);   /* the url and seen[url] */
            }
        }
        lua_pop(L, 2);
    }
    lua_pop(L, 1);
    return 1;
}

/* doc:links() -> absolute URLs of a[href], resolved against <base href> and the document's
   URL, in document order without duplicates; javascript: and mailto: links are left out. */
static int document_links(lua_State *L) {
    document *d = check_document(L, 1);
    const xmlChar *url = d->doc->URL;
    xmlChar *base = url ? xmlStrdup(url) : NULL;
    xmlXPathObjectPtr base_obj = xpath_eval(L, d, (xmlNodePtr)d->doc, "(//base[@href])[1]/@href");
    if (base_obj && base_obj->nodesetval && base_obj->nodesetval->nodeNr > 0) {
        xmlChar *href = xmlNodeGetContent(base_obj->nodesetval->nodeTab[0]);
        xmlChar *resolved = href ? xmlBuildURI(href, url) : NULL;
        if (resolved) {
            xmlFree(base);
            base = resolved;
        }
        xmlFree(href);
    }
    xmlXPathFreeObject(base_obj);
    xmlXPathObjectPtr obj = xpath_eval(L, d, (xmlNodePtr)d->doc, "//a/@href");
    if (obj == NULL) {
        xmlFree(base);
        return luaL_error(L, "not enough memory");
    }
    lua_pushcfunction(L, push_links);
    lua_pushlightuserdata(L, obj);
    lua_pushlightuserdata(L, base);
    int status = lua_pcall(L, 2, 1, 0);
    xmlXPathFreeObject(obj);
    xmlFree(base);
    if (status != LUA_OK) return lua_error(L);
    return 1;
}

/* doc:url() -> the URL given to parse, or nil. */
static int document_url(lua_State *L) {
    document *d = check_document(L, 1);
    if (d->doc->URL) lua_pushstring(L, (const char *)d->doc->URL);
    else lua_pushnil(L);
    return 1;
}

/* doc:root() -> the root element (html), or nil for an empty document. */
static int document_root(lua_State *L) {
    document *d = check_document(L, 1);
    xmlNodePtr root = xmlDocGetRootElement(d->doc);
    if (root == NULL) lua_pushnil(L);
    else push_node(L, 1, root);
    return 1;
}

/* doc:close(), __gc and __close: idempotent; the document's nodes become unusable. */
static int document_close(lua_State *L) {
    document *d = luaL_checkudata(L, 1, DOCUMENT_TYPE);
    if (d->xpath) xmlXPathFreeContext(d->xpath);
    if (d->doc) xmlFreeDoc(d->doc);
    d->xpath = NULL;
    d->doc = NULL;
    return 0;
}

/* tostring(doc) -> "forage.Document (url)" or "forage.Document (closed)". */
static int document_tostring(lua_State *L) {
    document *d = luaL_checkudata(L, 1, DOCUMENT_TYPE);
    if (d->doc == NULL) lua_pushliteral(L, "forage.Document (closed)");
    else lua_pushfstring(L, "forage.Document (%s)", d->doc->URL ? (const char *)d->doc->URL : "no url");
    return 1;
}

/* node:xpath(expr) -> as doc:xpath, relative to the node. */
static int node_xpath(lua_State *L) {
    node *n = check_node(L, 1);
    const char *expr = check_expression(L, 2);
    lua_getiuservalue(L, 1, 1);
    return xpath_query(L, lua_gettop(L), n->node, expr);
}

/* node:css(selector) -> as doc:css, relative to the node (the node itself included). The
   translation asks for the node's depth as $forage_depth (see forage.css). */
static int node_css(lua_State *L) {
    node *n = check_node(L, 1);
    const char *expr = css_to_xpath(L, 2, 1);
    double depth = 0;
    for (xmlNodePtr p = n->node->parent; p != NULL; p = p->parent) depth++;
    xmlXPathObjectPtr value = xmlXPathNewFloat(depth);
    if (value == NULL || xmlXPathRegisterVariable(document_context(L, n->owner), (const xmlChar *)"forage_depth",
                                                  value) != 0) {
        xmlXPathFreeObject(value);
        return luaL_error(L, "not enough memory");
    }
    lua_getiuservalue(L, 1, 1);
    return xpath_query(L, lua_gettop(L), n->node, expr);
}

/* node:text() -> all descendant text, concatenated (script and style included). */
static int node_text(lua_State *L) {
    node *n = check_node(L, 1);
    xmlChar *text = xmlNodeGetContent(n->node);
    lua_pushstring(L, text ? (const char *)text : "");
    xmlFree(text);
    return 1;
}

/* node:attr(name) -> the attribute's value, or nil when the node has none. */
static int node_attr(lua_State *L) {
    node *n = check_node(L, 1);
    const char *name = luaL_checkstring(L, 2);
    xmlChar *value = n->node->type == XML_ELEMENT_NODE ? xmlGetProp(n->node, (const xmlChar *)name) : NULL;
    if (value == NULL) {
        lua_pushnil(L);
        return 1;
    }
    lua_pushstring(L, (const char *)value);
    xmlFree(value);
    return 1;
}

/* node:html() -> the node's outer HTML, serialized as parsed (no added line breaks). */
static int node_html(lua_State *L) {
    node *n = check_node(L, 1);
    xmlOutputBufferPtr out = xmlAllocOutputBuffer(NULL);
    if (out == NULL) return luaL_error(L, "not enough memory");
    xmlNodePtr at = n->node->type == XML_ELEMENT_NODE ? n->node : xmlDocGetRootElement(n->owner->doc);
    if (at != NULL) htmlNodeDumpFormatOutput(out, n->owner->doc, at, NULL, 0);
    xmlOutputBufferFlush(out);
    const xmlChar *content = xmlOutputBufferGetContent(out);
    size_t size = xmlOutputBufferGetSize(out);
    if (content == NULL) size = 0;
    /* Copied into a Lua buffer before the output buffer is closed. */
    luaL_Buffer b;
    char *dst = luaL_buffinitsize(L, &b, size);
    if (size) memcpy(dst, content, size);
    xmlOutputBufferClose(out);
    luaL_pushresultsize(&b, size);
    return 1;
}

/* node.tag -> the element's name (lower case), nil for the document node; other keys
   are methods (looked up even on a closed document's node: calling them raises). */
static int node_index(lua_State *L) {
    const char *key = lua_tostring(L, 2);
    if (key && strcmp(key, "tag") == 0) {
        node *n = check_node(L, 1);
        if (n->node->type == XML_ELEMENT_NODE && n->node->name) lua_pushstring(L, (const char *)n->node->name);
        else lua_pushnil(L);
        return 1;
    }
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1));
    return 1;
}

/* a == b -> true when both are the same node of the same document. */
static int node_eq(lua_State *L) {
    node *a = luaL_checkudata(L, 1, NODE_TYPE);
    node *b = luaL_checkudata(L, 2, NODE_TYPE);
    lua_pushboolean(L, a->node == b->node && a->owner == b->owner);
    return 1;
}

/* tostring(node) -> "forage.Node <tag>". */
static int node_tostring(lua_State *L) {
    node *n = luaL_checkudata(L, 1, NODE_TYPE);
    if (n->owner->doc == NULL) lua_pushliteral(L, "forage.Node (closed document)");
    else if (n->node->type == XML_ELEMENT_NODE) lua_pushfstring(L, "forage.Node <%s>", (const char *)n->node->name);
    else lua_pushliteral(L, "forage.Node (document)");
    return 1;
}

/* Keeps libxml2 loaded for the life of the process: its global state, set up once by
   xmlInitParser, must not vanish when a lua_State closes and unloads forage.web (nor
   look like a leak to LeakSanitizer when it does). */
static void pin_libxml2(void) {
    void (*init)(void) = xmlInitParser;
    void *address;
    Dl_info info;
    memcpy(&address, &init, sizeof address);   /* ISO C has no function-to-object cast */
    if (dladdr(address, &info) && info.dli_fname != NULL)
        (void)dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD | RTLD_NODELETE);
}

void forage_open_html(lua_State *L) {
    static const luaL_Reg document_methods[] = {
        {"xpath", document_xpath}, {"css", document_css}, {"links", document_links},
        {"url", document_url}, {"root", document_root}, {"close", document_close}, {NULL, NULL},
    };
    static const luaL_Reg document_meta[] = {
        {"__gc", document_close}, {"__close", document_close},
        {"__tostring", document_tostring}, {NULL, NULL},
    };
    static const luaL_Reg node_methods[] = {
        {"xpath", node_xpath}, {"css", node_css}, {"text", node_text},
        {"attr", node_attr}, {"html", node_html}, {NULL, NULL},
    };
    static const luaL_Reg node_meta[] = {
        {"__eq", node_eq}, {"__tostring", node_tostring}, {NULL, NULL},
    };
    static const luaL_Reg functions[] = {
        {"parse", html_parse}, {NULL, NULL},
    };
    /* Once, in the parent, before any fork (libxml2's global state). */
    pin_libxml2();
    xmlInitParser();
    xmlSetGenericErrorFunc(NULL, silent_generic_error);
    xmlSetStructuredErrorFunc(NULL, silent_structured_error);

    type_register(L, DOCUMENT_TYPE, document_methods, document_meta, 0);
    type_register(L, NODE_TYPE, NULL, node_meta, 0);
    /* a node's __index is a function (node.tag), with the methods as its upvalue */
    luaL_getmetatable(L, NODE_TYPE);
    luaL_newlib(L, node_methods);
    lua_pushcclosure(L, node_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);

    luaL_newlib(L, functions);
    lua_setfield(L, -2, "html");
}
