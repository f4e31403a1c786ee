package main

import (
	stded25519 "crypto/ed25519"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/gnolang/gno/tm2/pkg/crypto/ed25519"
	"github.com/gnolang/gno/tm2/pkg/p2p/types"
)

// nodeKeySource is the pair of flags every mode with a node identity takes:
// a deterministic seed, or a node home whose secrets/node_key.json the
// reference loader reads (and creates if missing).
type nodeKeySource struct {
	seed string
	home string
}

func (s *nodeKeySource) register(fs *flag.FlagSet) {
	fs.StringVar(&s.seed, "seed", "", "32-byte Ed25519 seed, hex")
	fs.StringVar(&s.home, "home", "", "node home; the key is DIR/secrets/node_key.json")
}

func (s *nodeKeySource) key() (ed25519.PrivKeyEd25519, error) {
	switch {
	case s.seed != "" && s.home != "":
		return ed25519.PrivKeyEd25519{}, fmt.Errorf("%w: --seed and --home are exclusive", errUsage)
	case s.seed != "":
		return keyFromSeedHex(s.seed)
	case s.home != "":
		nk, err := loadOrMakeNodeKey(nodeKeyPath(s.home), true)
		if err != nil {
			return ed25519.PrivKeyEd25519{}, err
		}
		return nk.PrivKey, nil
	default:
		return ed25519.PrivKeyEd25519{}, fmt.Errorf("%w: one of --seed or --home is required", errUsage)
	}
}

func keyFromSeedHex(s string) (ed25519.PrivKeyEd25519, error) {
	var k ed25519.PrivKeyEd25519
	seed, err := hex.DecodeString(s)
	if err != nil || len(seed) != stded25519.SeedSize {
		return k, fmt.Errorf("%w: --seed must be %d bytes of hex", errUsage, stded25519.SeedSize)
	}
	// Same construction as the reference's key generator, minus the randomness.
	copy(k[:], stded25519.NewKeyFromSeed(seed))
	return k, nil
}

// idOf derives the ID the way a reference node does for its own key.
func idOf(k ed25519.PrivKeyEd25519) (pubHex string, id types.ID) {
	nk := types.NodeKey{PrivKey: k}
	pub := k.PubKey().(ed25519.PubKeyEd25519)
	return hex.EncodeToString(pub[:]), nk.ID()
}

func nodeKeyPath(home string) string {
	return filepath.Join(home, "secrets", "node_key.json")
}

func loadOrMakeNodeKey(path string, create bool) (*types.NodeKey, error) {
	if !create {
		return types.LoadNodeKey(path)
	}
	// The reference's writer does not create directories; a gno node's init
	// does, so the harness does the same.
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	return types.LoadOrMakeNodeKey(path)
}

// keyinfo: KEY <pubkey hex> <ID>, from a seed or from a bare public key.
func runKeyInfo(args []string) error {
	fs := newFlagSet("keyinfo")
	seed := fs.String("seed", "", "32-byte Ed25519 seed, hex")
	pubArg := fs.String("pubkey", "", "32-byte Ed25519 public key, hex (ID only, no seed)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case (*seed == "") == (*pubArg == ""):
		return fmt.Errorf("%w: exactly one of --seed or --pubkey is required", errUsage)
	case *seed != "":
		k, err := keyFromSeedHex(*seed)
		if err != nil {
			return err
		}
		pubHex, id := idOf(k)
		record("KEY", pubHex, id)
	default:
		raw, err := hex.DecodeString(*pubArg)
		if err != nil || len(raw) != ed25519.PubKeyEd25519Size {
			return fmt.Errorf("%w: --pubkey must be %d bytes of hex", errUsage, ed25519.PubKeyEd25519Size)
		}
		var pub ed25519.PubKeyEd25519
		copy(pub[:], raw)
		record("KEY", hex.EncodeToString(pub[:]), pub.Address().ID())
	}
	return nil
}

// node-key: KEY <pubkey hex> <ID> of the key the reference loads from (or,
// unless --no-create, writes to) the node key file.
func runNodeKey(args []string) error {
	fs := newFlagSet("node-key")
	home := fs.String("home", "", "node home; the key is DIR/secrets/node_key.json")
	file := fs.String("file", "", "explicit node_key.json path instead of --home")
	noCreate := fs.Bool("no-create", false, "only load; a missing file is an error")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var path string
	switch {
	case (*home == "") == (*file == ""):
		return fmt.Errorf("%w: exactly one of --home or --file is required", errUsage)
	case *home != "":
		path = nodeKeyPath(*home)
	default:
		path = *file
	}
	nk, err := loadOrMakeNodeKey(path, !*noCreate)
	if err != nil {
		return err
	}
	pubHex, id := idOf(nk.PrivKey)
	record("KEY", pubHex, id)
	return nil
}
