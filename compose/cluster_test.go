package compose

import (
	"encoding/xml"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/spendletonliveaction/flow-pipeline/compose/clickhouse"
)

const clusterStack = "docker-compose-clickhouse-cluster.yml"

// clusterConfig is compose/clickhouse-cluster/cluster.xml, as far as the
// test reads it.
type clusterConfig struct {
	Macros struct {
		Shard struct {
			FromEnv string `xml:"from_env,attr"`
		} `xml:"shard"`
		Replica struct {
			FromEnv string `xml:"from_env,attr"`
		} `xml:"replica"`
	} `xml:"macros"`
	Keeper []struct {
		Host string `xml:"host"`
		Port int    `xml:"port"`
	} `xml:"zookeeper>node"`
	Clusters struct {
		Inner []byte `xml:",innerxml"`
	} `xml:"remote_servers"`
}

type remoteCluster struct {
	XMLName xml.Name
	Secret  struct {
		FromEnv string `xml:"from_env,attr"`
	} `xml:"secret"`
	Shards []struct {
		InternalReplication bool `xml:"internal_replication"`
		Replicas            []struct {
			Host string `xml:"host"`
			Port int    `xml:"port"`
		} `xml:"replica"`
	} `xml:"shard"`
}

type keeperConfig struct {
	ServerID struct {
		FromEnv string `xml:"from_env,attr"`
	} `xml:"keeper_server>server_id"`
	TCPPort  int `xml:"keeper_server>tcp_port"`
	HTTPPort int `xml:"keeper_server>http_control>port"`
	Servers  []struct {
		ID       int    `xml:"id"`
		Hostname string `xml:"hostname"`
		Port     int    `xml:"port"`
	} `xml:"keeper_server>raft_configuration>server"`
}

func readXML(t *testing.T, path string, v any) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := xml.Unmarshal(raw, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func env(svc types.ServiceConfig, k string) string {
	if v := svc.Environment[k]; v != nil {
		return *v
	}
	return ""
}

// TestClusterKafka: three KRaft nodes, each broker and controller of one
// static quorum with a distinct id, advertising its own name, keeping 3
// copies and refusing a write that fewer than 2 hold; every node answers
// to the alias "kafka" the other services bootstrap from; kafka-init makes
// the topics the same way.
func TestClusterKafka(t *testing.T) {
	p := load(t, clusterStack)
	var voters []string
	for i, name := range clusterBrokers {
		voters = append(voters, fmt.Sprintf("%d@%s:9093", i+1, name))
	}
	for i, name := range clusterBrokers {
		svc := p.Services[name]
		want := map[string]string{
			"KAFKA_NODE_ID":                          strconv.Itoa(i + 1),
			"KAFKA_PROCESS_ROLES":                    "broker,controller",
			"KAFKA_CONTROLLER_QUORUM_VOTERS":         strings.Join(voters, ","),
			"KAFKA_ADVERTISED_LISTENERS":             "INTERNAL://" + name + ":9092",
			"KAFKA_DEFAULT_REPLICATION_FACTOR":       "3",
			"KAFKA_MIN_INSYNC_REPLICAS":              "2",
			"KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "3",
			"KAFKA_AUTO_CREATE_TOPICS_ENABLE":        "false",
		}
		for k, w := range want {
			if got := env(svc, k); got != w {
				t.Errorf("%s: %s=%q, want %q", name, k, got, w)
			}
		}
		if svc.Hostname != name {
			t.Errorf("%s: hostname %q, want %s (its advertised name)", name, svc.Hostname, name)
		}
		if n := svc.Networks["default"]; n == nil || !slices.Contains(n.Aliases, "kafka") {
			t.Errorf("%s does not answer to the alias kafka (networks %+v)", name, svc.Networks)
		}
		if len(svc.Ports) != 0 {
			t.Errorf("%s publishes %+v; the cluster's brokers stay inside the network", name, svc.Ports)
		}
		vols := 0
		for _, v := range svc.Volumes {
			if v.Target == "/var/lib/kafka/data" && v.Source == name+"-data" {
				vols++
			}
		}
		if vols != 1 {
			t.Errorf("%s does not keep its data in the volume %s-data", name, name)
		}
	}
	init := p.Services["kafka-init"]
	args := strings.Join(init.Entrypoint, " ")
	for _, want := range []string{"--replication-factor 1", "--bootstrap-server kafka:9092"} {
		if strings.Contains(args, want) {
			t.Errorf("kafka-init runs %q, which has %q", args, want)
		}
	}
	// Every topic it creates (flows, flows-enriched, flows-dlq, alerts).
	topics := strings.Count(args, "--topic ")
	if topics != 4 {
		t.Errorf("kafka-init creates %d topics, want 4: %s", topics, args)
	}
	if got := strings.Count(args, "--replication-factor 3 --config min.insync.replicas=2"); got != topics {
		t.Errorf("kafka-init creates %d topics with 3 copies and min.insync.replicas=2, want all %d: %s", got, topics, args)
	}
	if got := strings.Count(args, "--bootstrap-server "+strings.Join(hostPorts(clusterBrokers, 9092), ",")); got != topics {
		t.Errorf("kafka-init bootstraps %d times from the three brokers, want %d: %s", got, topics, args)
	}
	// The Kafka engine of every ClickHouse node reads the same brokers.
	if want := strings.Join(hostPorts(clusterBrokers, 9092), ","); clickhouse.ClusterBrokers != want {
		t.Errorf("the cluster schema's kafka_broker_list is %s, want %s", clickhouse.ClusterBrokers, want)
	}
}

func hostPorts(hosts []string, port int) []string {
	var out []string
	for _, h := range hosts {
		out = append(out, fmt.Sprintf("%s:%d", h, port))
	}
	return out
}

// TestClusterClickHouse: 3 Keeper nodes agree with keeper.xml; 4
// ClickHouse nodes, each a (shard, replica) of remote_servers' cluster
// flows_cluster under its own host name, with the macros and the secret
// from its environment, waiting for every Keeper node.
func TestClusterClickHouse(t *testing.T) {
	root := repoRoot(t)
	p := load(t, clusterStack)

	var kc keeperConfig
	readXML(t, filepath.Join(root, "compose", "clickhouse-cluster", "keeper.xml"), &kc)
	if len(kc.Servers) != len(clusterKeepers) || kc.ServerID.FromEnv != "KEEPER_SERVER_ID" {
		t.Fatalf("keeper.xml: %d Raft servers, server_id from %q; want %d, from KEEPER_SERVER_ID", len(kc.Servers), kc.ServerID.FromEnv, len(clusterKeepers))
	}
	for i, name := range clusterKeepers {
		svc := p.Services[name]
		s := kc.Servers[i]
		if s.Hostname != name || strconv.Itoa(s.ID) != env(svc, "KEEPER_SERVER_ID") || svc.Hostname != name {
			t.Errorf("keeper.xml server %+v; service %s has hostname %q, KEEPER_SERVER_ID %q", s, name, svc.Hostname, env(svc, "KEEPER_SERVER_ID"))
		}
		if h := healthTest(svc); !slices.Contains(h, fmt.Sprintf("http://127.0.0.1:%d/ready", kc.HTTPPort)) {
			t.Errorf("%s: health check %q does not ask /ready on the http_control port %d", name, h, kc.HTTPPort)
		}
	}

	var cc clusterConfig
	readXML(t, filepath.Join(root, "compose", "clickhouse-cluster", "cluster.xml"), &cc)
	var keepers []string
	for _, k := range cc.Keeper {
		keepers = append(keepers, fmt.Sprintf("%s:%d", k.Host, k.Port))
	}
	if want := hostPorts(clusterKeepers, kc.TCPPort); !slices.Equal(keepers, want) {
		t.Errorf("cluster.xml's zookeeper nodes are %v, want %v", keepers, want)
	}
	var rc remoteCluster
	if err := xml.Unmarshal([]byte("<x>"+string(cc.Clusters.Inner)+"</x>"), &struct {
		C *remoteCluster `xml:"flows_cluster"`
	}{&rc}); err != nil {
		t.Fatal(err)
	}
	if len(rc.Shards) != 2 {
		t.Fatalf("remote_servers has %d shards in %s, want 2 (is the cluster named %s?)", len(rc.Shards), clickhouse.ClusterName, clickhouse.ClusterName)
	}
	if !strings.Contains(string(cc.Clusters.Inner), "<"+clickhouse.ClusterName+">") {
		t.Errorf("remote_servers has no cluster %s", clickhouse.ClusterName)
	}
	seen := map[string]bool{}
	for si, shard := range rc.Shards {
		if !shard.InternalReplication {
			t.Errorf("shard %d: internal_replication must be true over replicated tables", si+1)
		}
		if len(shard.Replicas) != 2 {
			t.Errorf("shard %d has %d replicas, want 2", si+1, len(shard.Replicas))
		}
		for _, r := range shard.Replicas {
			svc, ok := p.Services[r.Host]
			if !ok || r.Port != 9000 {
				t.Errorf("shard %d: replica %s:%d is not a ClickHouse service of the stack on 9000", si+1, r.Host, r.Port)
				continue
			}
			seen[r.Host] = true
			if got := env(svc, cc.Macros.Shard.FromEnv); got != strconv.Itoa(si+1) {
				t.Errorf("%s: %s=%q, want %d (its shard in remote_servers)", r.Host, cc.Macros.Shard.FromEnv, got, si+1)
			}
			if got := env(svc, cc.Macros.Replica.FromEnv); got != r.Host || svc.Hostname != r.Host {
				t.Errorf("%s: %s=%q, hostname %q; want both %s", r.Host, cc.Macros.Replica.FromEnv, got, svc.Hostname, r.Host)
			}
			if env(svc, rc.Secret.FromEnv) == "" || rc.Secret.FromEnv == "" {
				t.Errorf("%s: the cluster secret (from %q) is not in its environment", r.Host, rc.Secret.FromEnv)
			}
			for _, k := range clusterKeepers {
				if d := svc.DependsOn[k]; d.Condition != types.ServiceConditionHealthy {
					t.Errorf("%s must wait for %s to be healthy (the init SQL creates replicated tables)", r.Host, k)
				}
			}
			if n := svc.Networks["default"]; n == nil || !slices.Contains(n.Aliases, "clickhouse") {
				t.Errorf("%s does not answer to the alias clickhouse, Grafana's datasource host", r.Host)
			}
		}
	}
	if len(seen) != len(clusterClickHouse) {
		t.Errorf("remote_servers names %v, want each of %v once", seen, clusterClickHouse)
	}
	for _, name := range clusterClickHouse {
		if d := p.Services["grafana"].DependsOn[name]; d.Condition != types.ServiceConditionHealthy {
			t.Errorf("grafana must wait for %s to be healthy", name)
		}
	}
}
