package config

import (
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// Field is one leaf setting: its path in the YAML file (kafka.brokers), its environment
// variable (SHUKEI_KAFKA_BROKERS), its flag (--kafka.brokers) and its help text.
type Field struct {
	Path string
	Env  string
	Flag string
	Doc  string
	// Secret: a credential or key, never printed (`secret:"true"` on the setting).
	Secret bool
	v      reflect.Value
}

// Fields lists every leaf setting of c, in declaration order, bound to c so Set changes c.
func (c *Config) Fields() []Field {
	var out []Field
	var walk func(v reflect.Value, prefix string)
	walk = func(v reflect.Value, prefix string) {
		t := v.Type()
		for i := range t.NumField() {
			sf := t.Field(i)
			name, _, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
			if name == "" || name == "-" {
				continue
			}
			path := name
			if prefix != "" {
				path = prefix + "." + name
			}
			fv := v.Field(i)
			if fv.Kind() == reflect.Struct {
				walk(fv, path)
				continue
			}
			out = append(out, Field{
				Path: path,
				Env:  envName(path),
				Flag: path,
				Doc:  sf.Tag.Get("doc"),

				Secret: sf.Tag.Get("secret") == "true",
				v:      fv,
			})
		}
	}
	walk(reflect.ValueOf(c).Elem(), "")
	return out
}

// envName is the environment variable of the setting at path: SHUKEI_KAFKA_BROKERS.
func envName(path string) string {
	return "SHUKEI_" + strings.ToUpper(strings.ReplaceAll(path, ".", "_"))
}

// Set parses s into the field. Lists are comma-separated; durations use Go syntax (10s, 1m).
func (f Field) Set(s string) error {
	switch f.v.Interface().(type) {
	case time.Duration:
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("%s: %q is not a duration like 10s or 5m", f.Path, s)
		}
		f.v.SetInt(int64(d))
		return nil
	case []string:
		var list []string
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				list = append(list, p)
			}
		}
		f.v.Set(reflect.ValueOf(list))
		return nil
	}
	switch f.v.Kind() {
	case reflect.String:
		f.v.SetString(s)
	case reflect.Int, reflect.Int64, reflect.Int32:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("%s: %q is not an integer", f.Path, s)
		}
		f.v.SetInt(n)
	case reflect.Float64:
		x, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return fmt.Errorf("%s: %q is not a number", f.Path, s)
		}
		f.v.SetFloat(x)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("%s: %q is not true or false", f.Path, s)
		}
		f.v.SetBool(b)
	default:
		return fmt.Errorf("%s: settings of kind %s cannot be set from text", f.Path, f.v.Kind())
	}
	return nil
}

// String renders the current value the way Set reads it.
func (f Field) String() string {
	switch x := f.v.Interface().(type) {
	case time.Duration:
		return x.String()
	case []string:
		return strings.Join(x, ",")
	}
	return fmt.Sprint(f.v.Interface())
}

// ApplyEnv sets every field whose SHUKEI_* variable is present in environ (os.Environ form).
// An unknown SHUKEI_ variable is an error for the same reason an unknown YAML key is; the
// SHUKEI_TEST_ ones belong to the tests.
func (c *Config) ApplyEnv(environ []string) error {
	byEnv := map[string]Field{}
	for _, f := range c.Fields() {
		byEnv[f.Env] = f
	}
	given := map[string]bool{}
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		given[k] = true
	}
	renamedEnv := map[string]string{} // old variable → old path
	for old := range Renamed {
		renamedEnv[envName(old)] = old
	}
	var errs []error
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(k, "SHUKEI_") || strings.HasPrefix(k, "SHUKEI_TEST_") || ignoredEnv[k] {
			continue
		}
		if old, ok := renamedEnv[k]; ok {
			if newEnv := envName(Renamed[old]); given[newEnv] {
				errs = append(errs, fmt.Errorf("%s and %s are the same setting (%s is its old name): keep %s", k, newEnv, k, newEnv))
				continue
			}
			k = envName(Renamed[old])
			c.Renamed = append(c.Renamed, old)
		}
		f, ok := byEnv[k]
		if !ok {
			errs = append(errs, fmt.Errorf("%s: unknown setting (see 'shukei --help' for the list)", k))
			continue
		}
		if err := f.Set(v); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", k, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w:\n  %w", ErrInvalid, indented(errs))
	}
	return nil
}

// ignoredEnv are SHUKEI_ variables read by scripts and tests, not by the configuration.
var ignoredEnv = map[string]bool{
	"SHUKEI_CONFIG":       true,
	"SHUKEI_SERVICES_DIR": true,
	"SHUKEI_CACHE_DIR":    true,
}

// Variables of scripts/services.sh (ports, versions) share the prefix but are not settings.
func init() {
	for _, k := range []string{"KAFKA_VERSION", "KAFKA_PORT", "KAFKA_CONTROLLER_PORT", "KAFKA_HEAP",
		"CLICKHOUSE_PORT", "CLICKHOUSE_HTTP_PORT", "CLICKHOUSE_INTERSERVER_PORT", "SERVICES_WAIT"} {
		ignoredEnv["SHUKEI_"+k] = true
	}
}

// AddFlags registers one flag per field of the given sections (kafka, clickhouse, ...; all of
// them when none is given) on fs. Flags start empty so that only the ones a user passes
// override the file and the environment; ApplyFlags applies those. Settings of other sections
// still come from the file and the environment.
func (c *Config) AddFlags(fs *pflag.FlagSet, sections ...string) {
	def := Default()
	defaults := map[string]string{}
	for _, f := range def.Fields() {
		defaults[f.Path] = f.String()
	}
	for _, f := range c.Fields() {
		if len(sections) > 0 && !slices.Contains(sections, f.Section()) {
			continue
		}
		fs.String(f.Flag, "", fmt.Sprintf("%s (default %q, env %s)", f.Doc, defaults[f.Path], f.Env))
	}
}

// Section is the top-level section the field belongs to: "kafka" for kafka.brokers.
func (f Field) Section() string {
	s, _, _ := strings.Cut(f.Path, ".")
	return s
}

// Sections lists the configuration's top-level sections in declaration order.
func Sections() []string {
	c := Default()
	var out []string
	for _, f := range c.Fields() {
		if s := f.Section(); !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// ApplyFlags sets every field whose flag was given on the command line.
func (c *Config) ApplyFlags(fs *pflag.FlagSet) error {
	var errs []error
	for _, f := range c.Fields() {
		fl := fs.Lookup(f.Flag)
		if fl == nil || !fl.Changed {
			continue
		}
		if err := f.Set(fl.Value.String()); err != nil {
			errs = append(errs, fmt.Errorf("--%s: %w", f.Flag, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w:\n  %w", ErrInvalid, indented(errs))
	}
	return nil
}

// Load builds the configuration: defaults, then the file at path (if path is not empty), then
// the environment, then the flags, then Validate.
func Load(path string, environ []string, fs *pflag.FlagSet) (Config, error) {
	c := Default()
	if path != "" {
		if err := c.LoadFile(path); err != nil {
			return c, err
		}
	}
	if err := c.ApplyEnv(environ); err != nil {
		return c, err
	}
	if fs != nil {
		if err := c.ApplyFlags(fs); err != nil {
			return c, err
		}
	}
	return c, c.Validate()
}

// Paths lists every setting path, sorted: the vocabulary of the file, env and flags.
func Paths() []string {
	c := Default()
	var out []string
	for _, f := range c.Fields() {
		out = append(out, f.Path)
	}
	sort.Strings(out)
	return out
}

// FilePath is the configuration file a command loads: flag (--config) if set, else
// $SHUKEI_CONFIG, else ./shukei.yaml when it exists; "" for none.
func FilePath(flag string) string {
	if flag != "" {
		return flag
	}
	if path := os.Getenv("SHUKEI_CONFIG"); path != "" {
		return path
	}
	if _, err := os.Stat("shukei.yaml"); err == nil {
		return "shukei.yaml"
	}
	return ""
}

// Print writes c to w as 'shukei config' shows it: the file it was loaded from (path; ""
// for none), then one setting a line with its value and its environment variable. A secret
// is never printed: a set one shows as "(set)".
func (c Config) Print(w io.Writer, path string) {
	src := path
	if src == "" {
		src = "(no file: defaults, environment and flags)"
	}
	fmt.Fprintf(w, "# source: %s\n", src)
	for _, f := range c.Fields() {
		v := f.String()
		if f.Secret && v != "" {
			v = "(set)"
		}
		fmt.Fprintf(w, "%-30s %-40s %s\n", f.Path, v, f.Env)
	}
}
