package testcluster

import (
	"errors"
	"strings"
	"testing"
)

func TestMissingBinariesNameThePackage(t *testing.T) {
	t.Setenv("PATH", t.TempDir()) // no pg_config, postgres or redis-server
	tests := []struct {
		name string
		find func() (string, error)
		want string
	}{
		{"postgres", func() (string, error) { return findPGBinIn(t.TempDir() + "/*/bin") }, "apt-get install -y postgresql-15"},
		{"redis", func() (string, error) { return findRedisIn([]string{t.TempDir() + "/redis-server"}) }, "apt-get install -y redis-server"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.find()
			if !errors.Is(err, ErrMissingBinary) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want ErrMissingBinary naming %q", err, tt.want)
			}
		})
	}
}

func TestFindsInstalledBinaries(t *testing.T) {
	b, err := findBinaries(true)
	if err != nil {
		t.Fatal(err)
	}
	if !hasPGTools(b.PGBin) || b.Redis == "" {
		t.Errorf("findBinaries = %+v", b)
	}
}
