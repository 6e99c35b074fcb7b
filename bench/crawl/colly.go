// The Go peer of the crawl benchmark, built as Colly is built: net/http + goquery, one
// goroutine per slot, each pinned to one proxy through an http.Transport of its own
// (Proxy: http.ProxyURL, keep-alive), a channel frontier fed by one dispatcher goroutine,
// and exact completion: the dispatcher counts the requests not yet done and closes the
// frontier when that count reaches zero.
//
//	colly START_FILE PROXIES_FILE SLOTS OUT_FILE
//
// Slot i uses proxy i mod len(proxies). A request that fails (a transport error, such as a
// reused connection tinyproxy closed, or a status other than 200) is retried on the same
// slot up to 10 times. Items go to OUT_FILE as JSON Lines; one JSON line of figures goes to
// stdout. Built by bench/crawl_bench.lua:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o BIN bench/crawl/colly.go
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/PuerkitoBio/goquery"
)

type request struct {
	url    *url.URL
	detail bool
}

type item struct {
	URL       string   `json:"url"`
	Directors []string `json:"directors"`
}

func lines(path string) []string {
	f, err := os.Open(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		if t := strings.TrimSpace(s.Text()); t != "" {
			out = append(out, t)
		}
	}
	return out
}

func main() {
	if len(os.Args) != 5 {
		fmt.Fprintln(os.Stderr, "usage: colly START_FILE PROXIES_FILE SLOTS OUT_FILE")
		os.Exit(2)
	}
	start, proxies := lines(os.Args[1]), lines(os.Args[2])
	slots, _ := strconv.Atoi(os.Args[3])
	out, err := os.Create(os.Args[4])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	t0 := time.Now()

	// The frontier: the dispatcher queues requests without bound and hands them out on pop;
	// a worker sends on done the requests one page led to when that page is finished (one
	// message: the page's children are counted before the page is), so outstanding == 0
	// means nothing queued and nothing in flight.
	pop := make(chan request)
	done := make(chan []request, 1024)
	go func() {
		var queue []request
		outstanding := 0
		for _, s := range start {
			u, err := url.Parse(s)
			if err != nil {
				continue
			}
			queue = append(queue, request{url: u})
			outstanding++
		}
		for outstanding > 0 {
			var send chan request
			var next request
			if len(queue) > 0 {
				send, next = pop, queue[0]
			}
			select {
			case children := <-done:
				queue = append(queue, children...)
				outstanding += len(children) - 1
			case send <- next:
				queue = queue[1:]
			}
		}
		close(pop)
	}()

	items := make(chan item, 1024)
	var written sync.WaitGroup
	written.Add(1)
	go func() {
		defer written.Done()
		w := bufio.NewWriter(out)
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		for it := range items {
			_ = enc.Encode(it)
		}
		w.Flush()
		out.Close()
	}()

	var pages, nitems, retries, failed int64
	var wg sync.WaitGroup
	for i := 0; i < slots; i++ {
		proxy, err := url.Parse(proxies[i%len(proxies)])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		client := &http.Client{
			Timeout: 30 * time.Second,
			Transport: &http.Transport{
				Proxy:               http.ProxyURL(proxy),
				MaxIdleConns:        1,
				MaxIdleConnsPerHost: 1,
				IdleConnTimeout:     90 * time.Second,
			},
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range pop {
				var doc *goquery.Document
				var children []request
				for attempt := 0; attempt <= 10 && doc == nil; attempt++ {
					if attempt > 0 {
						atomic.AddInt64(&retries, 1)
					}
					resp, err := client.Get(r.url.String())
					if err != nil {
						continue
					}
					if resp.StatusCode == http.StatusOK {
						doc, err = goquery.NewDocumentFromReader(resp.Body)
						if err != nil {
							doc = nil
						}
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				if doc == nil {
					atomic.AddInt64(&failed, 1)
				} else {
					atomic.AddInt64(&pages, 1)
					if r.detail {
						var names []string
						doc.Find("div.directors p.name").Each(func(_ int, s *goquery.Selection) {
							names = append(names, strings.TrimSpace(s.Text()))
						})
						atomic.AddInt64(&nitems, 1)
						items <- item{URL: r.url.String(), Directors: names}
					} else {
						doc.Find(`a.name`).Each(func(_ int, s *goquery.Selection) {
							if href, ok := s.Attr("href"); ok {
								if u, err := r.url.Parse(href); err == nil {
									children = append(children, request{url: u, detail: true})
								}
							}
						})
					}
				}
				done <- children
			}
		}()
	}
	wg.Wait()
	close(items)
	written.Wait()
	seconds := time.Since(t0).Seconds()
	fmt.Printf("{\"crawler\":\"go\",\"pages\":%d,\"items\":%d,\"seconds\":%.6f,\"retries\":%d,\"failed\":%d,\"slots\":%d}\n",
		pages, nitems, seconds, retries, failed, slots)
}
