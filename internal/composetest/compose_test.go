package composetest_test

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
)

// repoRoot is where docker-compose.yml and README.md live, relative to this package.
const repoRoot = "../.."

// loadProject parses docker-compose.yml like `docker compose config` would, with an empty
// environment so the result does not depend on the machine running the test. The file
// must not depend on the environment either: every `$` meant for a shell inside a
// container is escaped as `$$`, so any variable Compose tries to look up is a bug.
func loadProject(t *testing.T) *types.Project {
	t.Helper()
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(root, "docker-compose.yml")
	body, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var lookups []string
	p, err := loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir:  root,
		ConfigFiles: []types.ConfigFile{{Filename: path, Content: body}},
		Environment: types.Mapping{},
	}, func(o *loader.Options) {
		o.SetProjectName("hsdal", true)
		o.Interpolate.LookupValue = func(name string) (string, bool) {
			lookups = append(lookups, name)
			return "", false
		}
	})
	if err != nil {
		t.Fatalf("docker-compose.yml does not load: %v", err)
	}
	if len(lookups) > 0 {
		t.Fatalf("docker-compose.yml interpolates %q from the environment (escape a shell's $ as $$)", lookups)
	}
	return p
}

// readmeRow is one row of README.md's docker-compose table.
type readmeRow struct {
	service, role, address, user, password, database string
}

// readmeTable parses the table under "## docker-compose" in README.md whose header is
// | service | role | address | user | password | database |.
func readmeTable(t *testing.T) []readmeRow {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rows []readmeRow
	inSection, inTable := false, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "## ") {
			inSection = line == "## docker-compose"
			inTable = false
			continue
		}
		if !inSection || !strings.HasPrefix(line, "|") {
			if inTable {
				break // the table ended
			}
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.Trim(strings.TrimSpace(cells[i]), "`")
		}
		switch {
		case !inTable:
			want := []string{"service", "role", "address", "user", "password", "database"}
			if !slices.Equal(cells, want) {
				t.Fatalf("README docker-compose table header = %q, want %q", cells, want)
			}
			inTable = true
		case strings.HasPrefix(cells[0], "---"):
		case len(cells) != 6:
			t.Fatalf("README docker-compose table row %q: want 6 cells", line)
		default:
			rows = append(rows, readmeRow{cells[0], cells[1], cells[2], cells[3], cells[4], cells[5]})
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(rows) == 0 {
		t.Fatal(`README.md has no table under "## docker-compose"`)
	}
	return rows
}

func service(t *testing.T, p *types.Project, name string) types.ServiceConfig {
	t.Helper()
	s, ok := p.Services[name]
	if !ok {
		t.Fatalf("docker-compose.yml has no service %q", name)
	}
	return s
}

// configContent returns the inline content of the config mounted at target in s.
func configContent(t *testing.T, p *types.Project, s types.ServiceConfig, target string) string {
	t.Helper()
	for _, ref := range s.Configs {
		if ref.Target == target {
			c, ok := p.Configs[ref.Source]
			if !ok {
				t.Fatalf("service %s mounts undefined config %q", s.Name, ref.Source)
			}
			if c.Content == "" {
				t.Fatalf("config %q has no inline content", ref.Source)
			}
			if ref.Mode == nil || *ref.Mode&0o111 == 0 {
				t.Errorf("service %s: config %s at %s is not executable", s.Name, ref.Source, target)
			}
			return c.Content
		}
	}
	t.Fatalf("service %s mounts no config at %s", s.Name, target)
	return ""
}

func env(s types.ServiceConfig, key string) string {
	if v, ok := s.Environment[key]; ok && v != nil {
		return *v
	}
	return ""
}

const (
	primary  = "pg0"
	initPath = "/docker-entrypoint-initdb.d/10-hsdal.sh"
)

var standbys = []string{"pg1", "pg2"}

func TestComposeServicesAndHealthChecks(t *testing.T) {
	p := loadProject(t)
	want := []string{"pg0", "pg1", "pg2", "redis"}
	if got := p.ServiceNames(); !slices.Equal(sortedCopy(got), want) {
		t.Fatalf("services = %v, want %v", got, want)
	}
	for _, name := range want {
		t.Run(name, func(t *testing.T) {
			s := service(t, p, name)
			if s.HealthCheck == nil || s.HealthCheck.Disable || len(s.HealthCheck.Test) < 2 {
				t.Fatalf("no health check")
			}
			if s.HealthCheck.Interval == nil || s.HealthCheck.Retries == nil {
				t.Errorf("health check without interval/retries: %+v", s.HealthCheck)
			}
			for _, port := range s.Ports {
				if port.HostIP != "127.0.0.1" {
					t.Errorf("port %s:%d published on %q, want 127.0.0.1 only", port.Published, port.Target, port.HostIP)
				}
			}
			if strings.HasPrefix(name, "pg") && s.Image != "postgres:15" {
				t.Errorf("image = %q, want postgres:15 (the version hsdal is tested with)", s.Image)
			}
		})
	}
	if got := strings.Join(service(t, p, "redis").HealthCheck.Test, " "); !strings.Contains(got, "ping") {
		t.Errorf("redis health check %q does not ping", got)
	}
	for _, name := range standbys {
		if got := strings.Join(service(t, p, name).HealthCheck.Test, " "); !strings.Contains(got, "pg_is_in_recovery()") {
			t.Errorf("%s health check %q does not check that it is a hot standby", name, got)
		}
	}
}

func TestComposeReplicationWiring(t *testing.T) {
	p := loadProject(t)
	pg0 := service(t, p, primary)
	cmd := strings.Join(pg0.Command, " ")
	for _, setting := range []string{"wal_level=replica", "max_wal_senders=", "max_replication_slots=", "hot_standby=on"} {
		if !strings.Contains(cmd, setting) {
			t.Errorf("pg0 command %q lacks %s", cmd, setting)
		}
	}
	initScript := configContent(t, p, pg0, initPath)
	replPassword := regexp.MustCompile(`CREATE ROLE replicator LOGIN REPLICATION PASSWORD '([^']+)'`).FindStringSubmatch(initScript)
	if replPassword == nil {
		t.Fatalf("pg0 init script creates no replicator role:\n%s", initScript)
	}
	if !strings.Contains(initScript, "host replication replicator all") {
		t.Errorf("pg0 init script does not allow replication connections over the network:\n%s", initScript)
	}

	slots := map[string]bool{}
	for _, name := range standbys {
		t.Run(name, func(t *testing.T) {
			s := service(t, p, name)
			if dep, ok := s.DependsOn[primary]; !ok || dep.Condition != types.ServiceConditionHealthy {
				t.Errorf("depends_on pg0 = %+v, want condition service_healthy", s.DependsOn)
			}
			if got := env(s, "PRIMARY_HOST"); got != primary {
				t.Errorf("PRIMARY_HOST = %q, want %q", got, primary)
			}
			slot := env(s, "SLOT_NAME")
			if slot == "" || slots[slot] {
				t.Errorf("SLOT_NAME = %q: each standby needs its own slot", slot)
			}
			slots[slot] = true
			if got := env(s, "PGPASSWORD"); got != replPassword[1] {
				t.Errorf("PGPASSWORD = %q, want the replicator password from pg0's init script", got)
			}
			if len(s.Entrypoint) != 1 {
				t.Fatalf("entrypoint = %q, want the standby script", s.Entrypoint)
			}
			script := configContent(t, p, s, s.Entrypoint[0])
			for _, want := range []string{"pg_basebackup", " -R", `-S "$SLOT_NAME"`, " -C", "-U replicator", `-h "$PRIMARY_HOST"`, "exec postgres"} {
				if !strings.Contains(script, want) {
					t.Errorf("standby script lacks %q:\n%s", want, script)
				}
			}
			if !slices.ContainsFunc(s.Volumes, func(v types.ServiceVolumeConfig) bool {
				return v.Target == "/var/lib/postgresql/data" && v.Type == types.VolumeTypeVolume
			}) {
				t.Errorf("no named volume for the data directory: %+v", s.Volumes)
			}
		})
	}
}

// TestComposeScriptsParse checks the inline shell scripts, after Compose interpolation
// ($$ → $), with `bash -n`.
func TestComposeScriptsParse(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatalf("bash is needed to check the compose scripts (Debian package bash): %v", err)
	}
	p := loadProject(t)
	for name, c := range p.Configs {
		if !strings.HasPrefix(c.Content, "#!/bin/bash") {
			continue
		}
		t.Run(name, func(t *testing.T) {
			cmd := exec.Command(bash, "-n")
			cmd.Stdin = strings.NewReader(c.Content)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("bash -n: %v\n%s\n%s", err, out, c.Content)
			}
		})
	}
}

func TestComposeAgreesWithReadme(t *testing.T) {
	p := loadProject(t)
	rows := readmeTable(t)
	initScript := configContent(t, p, service(t, p, primary), initPath)

	var documented []string
	for _, r := range rows {
		documented = append(documented, r.service)
		t.Run(r.service, func(t *testing.T) {
			s := service(t, p, r.service)
			if len(s.Ports) != 1 {
				t.Fatalf("ports = %+v, want exactly one published port", s.Ports)
			}
			port := s.Ports[0]
			if got := port.HostIP + ":" + port.Published; got != r.address {
				t.Errorf("published at %s, README says %s", got, r.address)
			}
			switch {
			case r.service == "redis":
				if port.Target != 6379 {
					t.Errorf("redis container port = %d, want 6379", port.Target)
				}
			default:
				if port.Target != 5432 {
					t.Errorf("container port = %d, want 5432", port.Target)
				}
				role := regexp.MustCompile(`CREATE ROLE ` + regexp.QuoteMeta(r.user) + ` LOGIN PASSWORD '([^']*)'`).FindStringSubmatch(initScript)
				if role == nil {
					t.Fatalf("init script creates no login role %q", r.user)
				}
				if role[1] != r.password {
					t.Errorf("role %s has password %q, README says %q", r.user, role[1], r.password)
				}
				if !strings.Contains(initScript, "CREATE DATABASE "+r.database+" OWNER "+r.user) {
					t.Errorf("init script does not create database %s owned by %s", r.database, r.user)
				}
				wantRole := "primary"
				if slices.Contains(standbys, r.service) {
					wantRole = "hot standby of " + primary
				}
				if r.role != wantRole {
					t.Errorf("README role %q, want %q", r.role, wantRole)
				}
			}
		})
	}
	if got, want := sortedCopy(documented), sortedCopy(p.ServiceNames()); !slices.Equal(got, want) {
		t.Errorf("README documents services %v, compose defines %v", got, want)
	}
}

// TestReadmeExampleDSNsMatchTable checks that the example DSNs and Redis address README.md
// gives for the environment variables point at the compose services it lists.
func TestReadmeExampleDSNsMatchTable(t *testing.T) {
	body, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	rows := readmeTable(t)
	addr := map[string]readmeRow{}
	for _, r := range rows {
		addr[r.service] = r
	}
	dsn := func(service string) string {
		r := addr[service]
		return "postgres://" + r.user + ":" + r.password + "@" + r.address + "/" + r.database + "?sslmode=disable"
	}
	wantLines := map[string]string{
		"`HSDAL_PRIMARY_DSN`":  "`" + dsn("pg0") + "`",
		"`HSDAL_REPLICA_DSNS`": "`" + dsn("pg1") + "," + dsn("pg2") + "`",
		"`HSDAL_REDIS_ADDR`":   "`" + addr["redis"].address + "`",
	}
	for variable, example := range wantLines {
		found := false
		for _, line := range strings.Split(string(body), "\n") {
			if strings.HasPrefix(line, "| "+variable+" |") {
				found = true
				if !strings.HasSuffix(strings.TrimSpace(line), example+" |") {
					t.Errorf("README example for %s:\n  %s\nwant it to end with %s", variable, line, example)
				}
			}
		}
		if !found {
			t.Errorf("README documents no %s row", variable)
		}
	}
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}
