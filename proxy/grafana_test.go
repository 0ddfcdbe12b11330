package proxy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/config"
	"github.com/tokenhub/tokenhub/internal/usd"
	"github.com/tokenhub/tokenhub/keys"
)

// grafanaDashboard is the Grafana dashboard shipped for tokenhub's series.
const grafanaDashboard = "../dashboard/grafana/tokenhub.json"

// targetLabels are the labels Prometheus adds to every series it scrapes.
var targetLabels = []string{"job", "instance"}

// exportedFamily is a series family /metrics shows: its # TYPE and the label
// names its series carry.
type exportedFamily struct {
	typ    string
	labels []string
}

// exportedFamilies renders /metrics as a node does, with every family of
// tokenhub's touched once so that its labelled series exist, and returns each
// family by name: tokenhub's and the runtime's (go_*, process_*).
func exportedFamilies(t *testing.T) map[string]*exportedFamily {
	t.Helper()
	store, err := keys.OpenBolt(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	reg, err := keys.NewRegistry(store, keys.RegistryOptions{MaxKeys: 1000, NegativeTTL: time.Second, StaleIfError: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reg.Close)
	m := newGatewayMetrics()
	m.watchRegistry(reg)
	m.request("chat", "mock", "free", 200)
	m.used("mock", "free", usd.Tokens{Prompt: 10, Cached: 2, Completion: 5}, 1000, true, true, true)
	m.upstreamEvent("mock", upstreamFailover)
	// The route health families, written at each scrape from the routes a
	// server holds.
	cfg, err := config.Parse([]byte("upstreams: [{name: mock, base_url: \"inproc://mock\"}]\nmodels: [{name: mock, routes: [{upstream: mock}]}]\n"),
		"test.yaml", func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	rt, err := newRouting(cfg, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, u := range rt.upstreams.All() {
			u.Release()
		}
	})
	var s Server
	s.routing.Store(rt)
	m.set.RegisterMetricsWriter(s.writeRouteMetrics)
	var b bytes.Buffer
	m.write(&b)

	families := map[string]*exportedFamily{}
	for line := range strings.Lines(b.String()) {
		line = strings.TrimSuffix(line, "\n")
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			f := strings.Fields(rest)
			families[f[0]] = &exportedFamily{typ: f[1]}
			continue
		}
		if line == "" || line[0] == '#' {
			continue
		}
		name := line[:strings.IndexAny(line, "{ ")]
		family := families[name]
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(name, suffix); ok && family == nil && families[base] != nil {
				family = families[base]
			}
		}
		if family == nil {
			t.Fatalf("/metrics: %s has no # TYPE line", name)
		}
		for _, l := range seriesLabels(line) {
			if l != "le" && l != "quantile" && !slices.Contains(family.labels, l) {
				family.labels = append(family.labels, l)
			}
		}
	}
	for name := range metricHelp {
		if families[name] == nil {
			t.Fatalf("%s has a # HELP text but is not on /metrics: touch it above", name)
		}
	}
	return families
}

// seriesLabels returns the label names of one series line of the text
// format, `name{a="x",b="y\"z"} value`.
func seriesLabels(line string) []string {
	open := strings.IndexByte(line, '{')
	if open < 0 {
		return nil
	}
	var names []string
	for i := open + 1; i < len(line) && line[i] != '}'; {
		eq := strings.IndexByte(line[i:], '=')
		names = append(names, strings.TrimSpace(line[i:i+eq]))
		i += eq + 2 // past ="
		for ; i < len(line) && line[i] != '"'; i++ {
			if line[i] == '\\' {
				i++
			}
		}
		i++ // past the closing quote
		if i < len(line) && line[i] == ',' {
			i++
		}
	}
	return names
}

// grafanaPanel is the part of a dashboard panel the checks read.
type grafanaPanel struct {
	ID          int
	Type        string
	Title       string
	Description string
	Datasource  *grafanaDatasource
	GridPos     *struct{ H, W, X, Y int }
	Targets     []struct {
		RefID      string `json:"refId"`
		Expr       string
		Datasource *grafanaDatasource
	}
	Panels []grafanaPanel // a collapsed row's
}

type grafanaDatasource struct{ Type, UID string }

// TestGrafanaDashboard checks dashboard/grafana/tokenhub.json against the
// series tokenhub exports: every PromQL query (panels' and template
// variables') names only exported series, a histogram's _bucket/_sum/_count
// for a histogram, and only labels those series carry (or Prometheus' job and
// instance); a _bucket is read through histogram_quantile by le. Every panel
// queries the Prometheus data source chosen in the $datasource variable,
// and every tokenhub family is on some panel, so a new series needs a panel.
func TestGrafanaDashboard(t *testing.T) {
	data, err := os.ReadFile(grafanaDashboard)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title      string
		UID        string `json:"uid"`
		Panels     []grafanaPanel
		Templating struct {
			List []struct {
				Type, Name, Definition string
				Query                  any
				Datasource             *grafanaDatasource
			}
		}
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("%s: %v", grafanaDashboard, err)
	}
	families := exportedFamilies(t)
	shown := map[string]bool{}
	// check checks one PromQL expression; where says where it is.
	check := func(where, expr string) {
		t.Helper()
		refs, grouping, err := promQLNames(expr)
		if err != nil {
			t.Errorf("%s: %v in %q", where, err, expr)
			return
		}
		if len(refs) == 0 {
			t.Errorf("%s: %q names no series", where, expr)
		}
		labels := slices.Clone(targetLabels)
		for _, ref := range refs {
			name, family, isBucket := ref.name, families[ref.name], false
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if base, ok := strings.CutSuffix(ref.name, suffix); ok && family == nil && families[base] != nil && families[base].typ == "histogram" {
					name, family, isBucket = base, families[base], suffix == "_bucket"
				}
			}
			if family == nil {
				t.Errorf("%s: %s is not a series tokenhub exports", where, ref.name)
				continue
			}
			shown[name] = true
			allowed := append(slices.Clone(targetLabels), family.labels...)
			if isBucket {
				allowed = append(allowed, "le")
				if !strings.Contains(expr, "histogram_quantile(") || !slices.Contains(grouping, "le") {
					t.Errorf("%s: %s read other than through histogram_quantile(..., sum by (le) (...))", where, ref.name)
				}
			}
			for _, l := range ref.labels {
				if !slices.Contains(allowed, l) {
					t.Errorf("%s: %s has no label %q (it has %q)", where, ref.name, l, allowed)
				}
			}
			labels = append(labels, allowed...)
		}
		for _, l := range grouping {
			if !slices.Contains(labels, l) {
				t.Errorf("%s: groups by %q, a label none of its series has (%q)", where, l, labels)
			}
		}
	}

	hasDatasourceVar := false
	for _, v := range dash.Templating.List {
		switch v.Type {
		case "datasource":
			hasDatasourceVar = hasDatasourceVar || (v.Name == "datasource" && v.Query == "prometheus")
		case "query":
			q, _ := v.Query.(string)
			if v.Definition != "" && v.Definition != q {
				t.Errorf("variable %s: definition %q is not its query %q", v.Name, v.Definition, v.Query)
			}
			inner, ok := strings.CutPrefix(q, "label_values(")
			comma := strings.LastIndexByte(inner, ',')
			if !ok || comma < 0 || !strings.HasSuffix(inner, ")") {
				t.Errorf("variable %s: query %q is not label_values(SERIES, LABEL)", v.Name, v.Query)
				continue
			}
			label := strings.TrimSpace(inner[comma+1 : len(inner)-1])
			check("variable "+v.Name, fmt.Sprintf("sum by (%s) (%s)", label, inner[:comma]))
			if v.Datasource == nil || v.Datasource.UID != "${datasource}" {
				t.Errorf("variable %s: data source %+v, want ${datasource}", v.Name, v.Datasource)
			}
		}
	}
	if !hasDatasourceVar {
		t.Errorf("no template variable named datasource of type datasource (query prometheus)")
	}

	ids := map[int]string{}
	var walk func([]grafanaPanel)
	walk = func(panels []grafanaPanel) {
		for _, p := range panels {
			where := fmt.Sprintf("panel %d %q", p.ID, p.Title)
			if other, dup := ids[p.ID]; dup || p.ID == 0 {
				t.Errorf("%s: id used by %q too, or zero", where, other)
			}
			ids[p.ID] = p.Title
			if p.GridPos == nil || p.GridPos.W == 0 || p.GridPos.H == 0 {
				t.Errorf("%s: no gridPos", where)
			}
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if p.Description == "" {
				t.Errorf("%s: no description to say what it shows", where)
			}
			if p.Datasource == nil || p.Datasource.Type != "prometheus" || p.Datasource.UID != "${datasource}" {
				t.Errorf("%s: data source %+v, want {prometheus ${datasource}}", where, p.Datasource)
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s: no queries", where)
			}
			refIDs := map[string]bool{}
			for _, target := range p.Targets {
				if target.RefID == "" || refIDs[target.RefID] {
					t.Errorf("%s: refId %q missing or used twice", where, target.RefID)
				}
				refIDs[target.RefID] = true
				if target.Datasource != nil && target.Datasource.UID != "${datasource}" {
					t.Errorf("%s query %s: data source %+v, want ${datasource}", where, target.RefID, target.Datasource)
				}
				check(where+" query "+target.RefID, target.Expr)
			}
		}
	}
	walk(dash.Panels)

	for name := range metricHelp {
		if !shown[name] {
			t.Errorf("%s is on no panel of %s: add one (what it counts: %s)", name, grafanaDashboard, metricHelp[name])
		}
	}
	if dash.Title == "" || dash.UID == "" {
		t.Errorf("dashboard title %q uid %q: want both", dash.Title, dash.UID)
	}
}

// promQLRef is a series named in a PromQL expression, with the label names
// of its matchers.
type promQLRef struct {
	name   string
	labels []string
}

// promQLNames finds the series an expression names and the labels it groups
// by (by, without, on, ignoring, group_left/right lists). It is a scanner,
// not a parser: it knows PromQL's lexical classes (strings, durations and
// ranges in [...], matchers in {...}, numbers, Grafana's $variables) and its
// functions and keywords; any other identifier is a series name. An unknown
// function is an error, so a misspelt one cannot pass for a series.
func promQLNames(expr string) (refs []promQLRef, grouping []string, err error) {
	isIdent := func(c byte, first bool) bool {
		return c == '_' || c == ':' || (c|0x20 >= 'a' && c|0x20 <= 'z') || (!first && c >= '0' && c <= '9')
	}
	skipSpace := func(i int) int {
		for i < len(expr) && strings.IndexByte(" \t\r\n", expr[i]) >= 0 {
			i++
		}
		return i
	}
	// labelList reads "(a, b, c)" at i.
	labelList := func(i int) ([]string, int, error) {
		end := strings.IndexByte(expr[i:], ')')
		if end < 0 {
			return nil, 0, fmt.Errorf("unclosed label list at %d", i)
		}
		var labels []string
		for l := range strings.SplitSeq(expr[i+1:i+end], ",") {
			if l = strings.TrimSpace(l); l != "" {
				labels = append(labels, l)
			}
		}
		return labels, i + end + 1, nil
	}
	depth := 0 // of parentheses
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			j := i + 1
			for ; j < len(expr) && expr[j] != c; j++ {
				if expr[j] == '\\' && c != '`' {
					j++
				}
			}
			if j >= len(expr) {
				return nil, nil, fmt.Errorf("unclosed string at %d", i)
			}
			i = j + 1
		case c == '[':
			end := strings.IndexByte(expr[i:], ']')
			if end < 0 {
				return nil, nil, fmt.Errorf("unclosed range at %d", i)
			}
			i += end + 1
		case c == '{':
			if len(refs) == 0 || refs[len(refs)-1].labels != nil {
				return nil, nil, fmt.Errorf("matchers at %d follow no series name", i)
			}
			ref := &refs[len(refs)-1]
			ref.labels = []string{}
			i++
			for {
				i = skipSpace(i)
				if i >= len(expr) {
					return nil, nil, fmt.Errorf("unclosed matchers")
				}
				if expr[i] == '}' {
					i++
					break
				}
				if expr[i] == ',' {
					i++
					continue
				}
				j := i
				for j < len(expr) && isIdent(expr[j], j == i) {
					j++
				}
				if j == i {
					return nil, nil, fmt.Errorf("bad matcher at %d", i)
				}
				if expr[i:j] == "__name__" {
					return nil, nil, fmt.Errorf("a matcher on __name__: name the series")
				}
				ref.labels = append(ref.labels, expr[i:j])
				i = skipSpace(j)
				for i < len(expr) && strings.IndexByte("=!~", expr[i]) >= 0 {
					i++
				}
				i = skipSpace(i)
				if i >= len(expr) || expr[i] != '"' {
					return nil, nil, fmt.Errorf("matcher %s has no quoted value", ref.labels[len(ref.labels)-1])
				}
				k := i + 1
				for ; k < len(expr) && expr[k] != '"'; k++ {
					if expr[k] == '\\' {
						k++
					}
				}
				i = k + 1
			}
		case c == '$':
			// A Grafana variable: $name, ${name} or $__interval.
			i++
			if i < len(expr) && expr[i] == '{' {
				end := strings.IndexByte(expr[i:], '}')
				if end < 0 {
					return nil, nil, fmt.Errorf("unclosed ${ at %d", i)
				}
				i += end + 1
			}
			for i < len(expr) && isIdent(expr[i], false) {
				i++
			}
		case c >= '0' && c <= '9' || c == '.':
			for i < len(expr) && (isIdent(expr[i], false) || expr[i] == '.') {
				i++
			}
		case isIdent(c, true):
			j := i
			for j < len(expr) && isIdent(expr[j], false) {
				j++
			}
			word := expr[i:j]
			next := skipSpace(j)
			call := next < len(expr) && expr[next] == '('
			switch {
			case word == "by" || word == "without" || word == "on" || word == "ignoring" || word == "group_left" || word == "group_right":
				if !call {
					i = j // group_left without a list
					continue
				}
				labels, end, err := labelList(next)
				if err != nil {
					return nil, nil, err
				}
				grouping = append(grouping, labels...)
				i = end
				continue
			case promQLKeywords[strings.ToLower(word)]:
			case promQLFunctions[word] && (call || strings.HasPrefix(expr[next:], "by") || strings.HasPrefix(expr[next:], "without")):
				// A function, or an aggregation with its grouping first.
			case call:
				return nil, nil, fmt.Errorf("unknown PromQL function %s", word)
			default:
				refs = append(refs, promQLRef{name: word})
			}
			i = j
		default:
			switch c {
			case '(':
				depth++
			case ')':
				if depth--; depth < 0 {
					return nil, nil, fmt.Errorf("unbalanced ) at %d", i)
				}
			}
			i++
		}
	}
	if depth != 0 {
		return nil, nil, fmt.Errorf("unbalanced (")
	}
	return refs, grouping, nil
}

// promQLKeywords are PromQL's binary operators and modifiers spelt as words,
// and its number literals.
var promQLKeywords = words("and or unless bool offset inf nan")

// promQLFunctions are PromQL's aggregations and functions.
var promQLFunctions = words(`sum avg min max count group stddev stdvar topk bottomk quantile count_values limitk limit_ratio
		abs absent absent_over_time ceil changes clamp clamp_max clamp_min day_of_month day_of_week day_of_year
		days_in_month delta deriv exp floor histogram_avg histogram_count histogram_fraction histogram_quantile
		histogram_stddev histogram_stdvar histogram_sum holt_winters double_exponential_smoothing hour idelta increase
		irate label_join label_replace ln log2 log10 minute month predict_linear rate resets round scalar sgn sort
		sort_desc sort_by_label sort_by_label_desc sqrt time timestamp vector year avg_over_time min_over_time
		max_over_time sum_over_time count_over_time quantile_over_time stddev_over_time stdvar_over_time
		last_over_time present_over_time mad_over_time acos acosh asin asinh atan atanh cos cosh sin sinh tan tanh
		deg rad pi`)

func words(list string) map[string]bool {
	set := map[string]bool{}
	for w := range strings.FieldsSeq(list) {
		set[w] = true
	}
	return set
}

// TestPromQLNames pins what the dashboard check reads out of an expression.
func TestPromQLNames(t *testing.T) {
	f := func(expr, wantRefs, wantGrouping, wantErr string) {
		t.Helper()
		refs, grouping, err := promQLNames(expr)
		if wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), wantErr) {
				t.Fatalf("%s: error %v, want %q", expr, err, wantErr)
			}
			return
		}
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		var got []string
		for _, r := range refs {
			got = append(got, r.name+fmt.Sprint(r.labels))
		}
		if strings.Join(got, " ") != wantRefs || strings.Join(grouping, " ") != wantGrouping {
			t.Fatalf("%s: refs %q grouping %q, want %q and %q", expr, got, grouping, wantRefs, wantGrouping)
		}
	}
	f(`up`, "up[]", "", "")
	f(`rate(a_total{x="1",y!~"b_total"}[5m])`, "a_total[x y]", "", "")
	f(`sum by (le, endpoint) (rate(h_bucket{job=~"$job"}[$__rate_interval]))`, "h_bucket[job]", "le endpoint", "")
	f(`sum(rate(a[1m])) without (instance) / on (job) group_left b offset 5m`, "a[] b[]", "instance job", "")
	f(`histogram_quantile(0.99, x) * 3600 > 1e3 and bool c`, "x[] c[]", "", "")
	f(`a{s="}{\"q"}`, "a[s]", "", "")
	f(`{__name__="a"}`, "", "", "follow no series")
	f(`a{__name__="b"}`, "", "", "__name__")
	f(`rat(a[5m])`, "", "", "unknown PromQL function rat")
	f(`a{x=y}`, "", "", "no quoted value")
	f(`sum(a[5m]`, "", "", "unbalanced (")
	f(`sum(a))`, "", "", "unbalanced )")
}
