package main

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"time"

	bftconfig "github.com/gnolang/gno/tm2/pkg/bft/config"
	"github.com/pelletier/go-toml"
)

// config: the default config.toml a reference node writes into a fresh home
// (DefaultConfig rendered by WriteConfigFile, the file
// LoadOrMakeConfigWithOptions writes on a node's first start), then the values
// the reference's loader reads back from that file. The whole-node checks are
// skipped (the default DB backend is not linked into the harness); the [p2p]
// section is validated.
//
// Output: CONFIG <path>; BASE moniker|node_key_file <Go-quoted string>; then
// P2P <toml key> <value> for every field of the [p2p] section in declaration
// order: strings Go-quoted, durations in nanoseconds, integers and booleans
// as written.
func runConfig(args []string) error {
	fs := newFlagSet("config")
	home := fs.String("home", "", "home directory; DIR/config/config.toml must not exist yet")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *home == "" {
		return fmt.Errorf("%w: --home is required", errUsage)
	}
	path := filepath.Join(*home, "config", "config.toml")
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("%w: %s exists; the mode writes a fresh one", errUsage, path)
	}
	def := bftconfig.DefaultConfig()
	def.SetRootDir(*home)
	if err := def.EnsureDirs(); err != nil {
		return err
	}
	if err := bftconfig.WriteConfigFile(path, def); err != nil {
		return err
	}
	// Read back as loadConfigFile does: the file over the defaults.
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	cfg := bftconfig.DefaultConfig()
	if err := toml.Unmarshal(data, cfg); err != nil {
		return err
	}
	if err := cfg.P2P.ValidateBasic(); err != nil {
		return err
	}
	record("CONFIG", path)
	record("BASE", "moniker", strconv.Quote(cfg.Moniker))
	record("BASE", "node_key_file", strconv.Quote(cfg.NodeKey))

	v := reflect.ValueOf(cfg.P2P).Elem()
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		key, _, _ := strings.Cut(t.Field(i).Tag.Get("toml"), ",")
		if key == "" || key == "-" || key == "home" {
			continue // RootDir: set from the home, not part of the file
		}
		record("P2P", key, tomlValue(v.Field(i)))
	}
	return nil
}

func tomlValue(f reflect.Value) string {
	if d, ok := f.Interface().(time.Duration); ok {
		return strconv.FormatInt(int64(d), 10)
	}
	switch f.Kind() {
	case reflect.String:
		return strconv.Quote(f.String())
	case reflect.Bool:
		return strconv.FormatBool(f.Bool())
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.FormatInt(f.Int(), 10)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return strconv.FormatUint(f.Uint(), 10)
	}
	return fmt.Sprintf("%v", f.Interface())
}
