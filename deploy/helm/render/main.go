// render: Helm's template engine, offline, for checking deploy/helm/eap on machines without a helm binary.
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go run ./deploy/helm/render CHART_DIR [-f values.yaml ...]
//
// What it does as `helm template` does: text/template with sprig's function map plus Helm's own
// functions (include, tpl, required, toYaml, fromYaml, toJson, fromJson), values = the chart's values.yaml
// deep-merged with each -f file in order, .Release/.Chart/.Values/.Template, templates/_*.tpl as named
// templates only, output as YAML documents. What it does NOT do: subcharts, .Capabilities, lookup, hooks
// ordering, values.schema.json (checked separately with python jsonschema), post-renderers. Numbers
// from values are float64 as in Helm (values pass through JSON there too).
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig"
	yaml2 "gopkg.in/yaml.v2"
	yaml3 "gopkg.in/yaml.v3"
)

func jsonNormalize(v interface{}) (interface{}, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var out interface{}
	err = json.Unmarshal(b, &out)
	return out, err
}

func readYAML(path string) (map[string]interface{}, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var v map[string]interface{}
	if err := yaml3.Unmarshal(raw, &v); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	n, err := jsonNormalize(v)
	if err != nil || n == nil {
		return map[string]interface{}{}, err
	}
	return n.(map[string]interface{}), nil
}

// merge: override wins; maps merge recursively; a null in the override deletes the key (Helm's rule).
func merge(base, over map[string]interface{}) map[string]interface{} {
	out := map[string]interface{}{}
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		if v == nil {
			delete(out, k)
			continue
		}
		bm, ok1 := out[k].(map[string]interface{})
		om, ok2 := v.(map[string]interface{})
		if ok1 && ok2 {
			out[k] = merge(bm, om)
		} else {
			out[k] = v
		}
	}
	return out
}

func toYAML(v interface{}) string {
	b, err := yaml2.Marshal(v)
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(string(b), "\n")
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: render CHART_DIR [-f values.yaml ...] [--namespace NS] [--release NAME]")
		os.Exit(2)
	}
	chartDir := os.Args[1]
	release, namespace := "eap", "eap"
	values, err := readYAML(filepath.Join(chartDir, "values.yaml"))
	check(err)
	for i := 2; i < len(os.Args); i++ {
		switch os.Args[i] {
		case "-f":
			i++
			over, err := readYAML(os.Args[i])
			check(err)
			values = merge(values, over)
		case "--namespace":
			i++
			namespace = os.Args[i]
		case "--release":
			i++
			release = os.Args[i]
		default:
			check(fmt.Errorf("unknown argument %q", os.Args[i]))
		}
	}
	chart, err := readYAML(filepath.Join(chartDir, "Chart.yaml"))
	check(err)
	chartObj := map[string]interface{}{}
	for k, v := range chart { // .Chart.Name, .Chart.Version, .Chart.AppVersion as Helm exposes them
		chartObj[strings.ToUpper(k[:1])+k[1:]] = v
	}
	root := template.New("chart")
	funcs := sprig.TxtFuncMap()
	funcs["toYaml"] = toYAML
	funcs["fromYaml"] = func(s string) map[string]interface{} {
		var v map[string]interface{}
		if err := yaml3.Unmarshal([]byte(s), &v); err != nil {
			return map[string]interface{}{"Error": err.Error()}
		}
		n, _ := jsonNormalize(v)
		m, _ := n.(map[string]interface{})
		return m
	}
	funcs["toJson"] = func(v interface{}) string { b, _ := json.Marshal(v); return string(b) }
	funcs["fromJson"] = func(s string) map[string]interface{} {
		var m map[string]interface{}
		_ = json.Unmarshal([]byte(s), &m)
		return m
	}
	funcs["required"] = func(msg string, v interface{}) (interface{}, error) {
		if v == nil || v == "" {
			return nil, fmt.Errorf("%s", msg)
		}
		return v, nil
	}
	funcs["include"] = func(name string, data interface{}) (string, error) {
		var buf bytes.Buffer
		err := root.ExecuteTemplate(&buf, name, data)
		return buf.String(), err
	}
	funcs["tpl"] = func(text string, data interface{}) (string, error) {
		t, err := root.Clone()
		if err != nil {
			return "", err
		}
		t, err = t.New("tpl").Parse(text)
		if err != nil {
			return "", err
		}
		var buf bytes.Buffer
		err = t.Execute(&buf, data)
		return buf.String(), err
	}
	root.Funcs(funcs).Option("missingkey=zero")
	files, err := filepath.Glob(filepath.Join(chartDir, "templates", "*"))
	check(err)
	sort.Strings(files)
	for _, f := range files {
		text, err := os.ReadFile(f)
		check(err)
		_, err = root.New(filepath.Join(filepath.Base(chartDir), "templates", filepath.Base(f))).Parse(string(text))
		check(err)
	}
	for _, f := range files {
		base := filepath.Base(f)
		if strings.HasPrefix(base, "_") || !(strings.HasSuffix(base, ".yaml") || strings.HasSuffix(base, ".yml")) {
			continue
		}
		name := filepath.Join(filepath.Base(chartDir), "templates", base)
		data := map[string]interface{}{
			"Values":   values,
			"Chart":    chartObj,
			"Release":  map[string]interface{}{"Name": release, "Namespace": namespace, "Service": "Helm", "IsInstall": true, "IsUpgrade": false, "Revision": 1},
			"Template": map[string]interface{}{"Name": name, "BasePath": filepath.Join(filepath.Base(chartDir), "templates")},
		}
		var buf bytes.Buffer
		check(root.ExecuteTemplate(&buf, name, data))
		for _, doc := range strings.Split(buf.String(), "\n---") {
			if strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(doc), "---")) == "" {
				continue
			}
			fmt.Printf("---\n# Source: %s\n%s\n", name, strings.Trim(strings.TrimPrefix(strings.TrimSpace(doc), "---"), "\n"))
		}
	}
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "render:", err)
		os.Exit(1)
	}
}
