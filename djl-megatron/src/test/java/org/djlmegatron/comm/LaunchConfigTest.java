package org.djlmegatron.comm;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.time.Duration;
import java.util.HashMap;
import java.util.Map;
import org.junit.jupiter.api.Test;

class LaunchConfigTest {

    private static Map<String, String> env(String... kv) {
        Map<String, String> m = new HashMap<>();
        for (int i = 0; i < kv.length; i += 2) {
            m.put(kv[i], kv[i + 1]);
        }
        return m;
    }

    @Test
    void anEmptyEnvironmentIsOneNodeOnLoopback() {
        LaunchConfig c = LaunchConfig.fromEnvironment(env(), 4);
        assertThat(c).isEqualTo(new LaunchConfig(4, 1, 0, "127.0.0.1", 29500, Duration.ofSeconds(120), "default"));
        assertThat(c.worldSize()).isEqualTo(4);
        assertThat(c.firstRank()).isZero();
    }

    @Test
    void torchrunStyleWithNnodesAndNodeRank() {
        LaunchConfig c = LaunchConfig.fromEnvironment(env("MASTER_ADDR", "10.0.0.7", "MASTER_PORT", "12345",
                "NNODES", "3", "NODE_RANK", "2", "TORCHELASTIC_RUN_ID", "job-9", "DJLM_TIMEOUT_SECONDS", "7.5"), 2);
        assertThat(c).isEqualTo(new LaunchConfig(2, 3, 2, "10.0.0.7", 12345, Duration.ofMillis(7500), "job-9"));
        assertThat(c.worldSize()).isEqualTo(6);
        assertThat(c.firstRank()).isEqualTo(4);
    }

    @Test
    void worldSizeAndRankCountRanks() {
        LaunchConfig c = LaunchConfig.fromEnvironment(env("WORLD_SIZE", "8", "RANK", "4"), 4);
        assertThat(c.nnodes()).isEqualTo(2);
        assertThat(c.nodeRank()).isEqualTo(1);
        // torchrun's GROUP_RANK is the node rank
        assertThat(LaunchConfig.fromEnvironment(env("WORLD_SIZE", "8", "GROUP_RANK", "1"), 4).nodeRank()).isEqualTo(1);
        // agreeing settings are fine
        LaunchConfig all = LaunchConfig.fromEnvironment(
                env("NNODES", "2", "WORLD_SIZE", "8", "NODE_RANK", "1", "GROUP_RANK", "1", "RANK", "4"), 4);
        assertThat(all.nodeRank()).isEqualTo(1);
    }

    @Test
    void slurmGivesNodesRankMasterAndRunId() {
        LaunchConfig c = LaunchConfig.fromEnvironment(env("SLURM_NNODES", "4", "SLURM_NODEID", "3",
                "SLURM_JOB_NODELIST", "gpu-[07-10]", "SLURM_JOB_ID", "4242"), 8);
        assertThat(c).isEqualTo(new LaunchConfig(8, 4, 3, "gpu-07", 29500, Duration.ofSeconds(120), "4242"));
        // MASTER_ADDR and the torchrun variables win over Slurm's
        LaunchConfig explicit = LaunchConfig.fromEnvironment(env("SLURM_NNODES", "4", "SLURM_NODEID", "3",
                "SLURM_JOB_NODELIST", "gpu-[07-10]", "MASTER_ADDR", "head", "NNODES", "2", "NODE_RANK", "0"), 8);
        assertThat(explicit.masterAddr()).isEqualTo("head");
        assertThat(explicit.nnodes()).isEqualTo(2);
        assertThat(explicit.nodeRank()).isZero();
        assertThat(LaunchConfig.fromEnvironment(env("SLURM_NODELIST", "solo"), 1).masterAddr()).isEqualTo("solo");
    }

    @Test
    void slurmNodeListsExpand() {
        assertThat(LaunchConfig.parseNodeList("host")).containsExactly("host");
        assertThat(LaunchConfig.parseNodeList("host[1-3,5]")).containsExactly("host1", "host2", "host3", "host5");
        assertThat(LaunchConfig.parseNodeList("prefix-[01-04]"))
                .containsExactly("prefix-01", "prefix-02", "prefix-03", "prefix-04");
        assertThat(LaunchConfig.parseNodeList("a,b[8-11],c-[001-002]"))
                .containsExactly("a", "b8", "b9", "b10", "b11", "c-001", "c-002");
        assertThat(LaunchConfig.parseNodeList("rack[1-2]-n[1-2]-ib"))
                .containsExactly("rack1-n1-ib", "rack1-n2-ib", "rack2-n1-ib", "rack2-n2-ib");
        for (String bad : new String[] {"a[1-", "a]", "a,,b", "a[]", "a[3-1]", "a[x]", "a[[1]]", ""}) {
            assertThatThrownBy(() -> LaunchConfig.parseNodeList(bad)).as(bad)
                    .isInstanceOf(IllegalArgumentException.class);
        }
    }

    @Test
    void malformedValuesAreNamed() {
        assertError(env("MASTER_PORT", "http"), 1, "MASTER_PORT='http' is not an integer");
        assertError(env("MASTER_PORT", "70000"), 1, "MASTER_PORT='70000' is not a TCP port (1..65535)");
        assertError(env("NNODES", "0"), 1, "NNODES='0' must be >= 1");
        assertError(env("NODE_RANK", "-1"), 1, "NODE_RANK='-1' must be >= 0");
        assertError(env("WORLD_SIZE", "6"), 4, "WORLD_SIZE='6' is not a multiple of nproc-per-node 4");
        assertError(env("WORLD_SIZE", "8", "RANK", "3"), 4, "RANK='3' is not a multiple of nproc-per-node 4");
        assertError(env("DJLM_TIMEOUT_SECONDS", "-3"), 1, "DJLM_TIMEOUT_SECONDS='-3' is not a positive number");
        assertError(env("SLURM_JOB_NODELIST", "gpu[1-"), 1, "SLURM_JOB_NODELIST='gpu[1-' is not a Slurm node list");
        assertError(env("SLURM_NNODES", "two"), 1, "SLURM_NNODES='two' is not an integer");
        assertThatThrownBy(() -> LaunchConfig.fromEnvironment(env(), 0)).hasMessageContaining("nproc-per-node must be >= 1");
    }

    @Test
    void contradictionsAreNamed() {
        assertError(env("NNODES", "2", "WORLD_SIZE", "6"), 2,
                "WORLD_SIZE='6' contradicts NNODES='2' with nproc-per-node 2: expected WORLD_SIZE=4");
        assertError(env("NNODES", "2", "NODE_RANK", "1", "GROUP_RANK", "0"), 2,
                "GROUP_RANK='0' gives node rank 0, but NODE_RANK='1' gives 1");
        assertError(env("NNODES", "2", "NODE_RANK", "1", "RANK", "0"), 2,
                "RANK='0' / nproc-per-node 2 gives node rank 0, but NODE_RANK='1' gives 1");
        assertError(env("NNODES", "2", "NODE_RANK", "2"), 2,
                "node rank 2 (from NODE_RANK='2') is out of range: there are 2 node(s) (from NNODES='2')");
        assertError(env("WORLD_SIZE", "4", "RANK", "4"), 2,
                "node rank 2 (from RANK='4' / nproc-per-node 2) is out of range: there are 2 node(s)"
                        + " (from WORLD_SIZE='4' / nproc-per-node 2)");
        assertError(env("SLURM_NNODES", "2", "SLURM_NODEID", "5"), 1,
                "node rank 5 (from SLURM_NODEID='5') is out of range: there are 2 node(s) (from SLURM_NNODES='2')");
        assertError(env("NODE_RANK", "1"), 1,
                "node rank 1 (from NODE_RANK='1') is out of range: there are 1 node(s) (from the default of 1)");
    }

    @Test
    void theRecordChecksItsFields() {
        Duration t = Duration.ofSeconds(1);
        assertThatThrownBy(() -> new LaunchConfig(0, 1, 0, "h", 1, t)).hasMessageContaining("nproc-per-node");
        assertThatThrownBy(() -> new LaunchConfig(1, 2, 2, "h", 1, t)).hasMessageContaining("node rank 2 is out of range");
        assertThatThrownBy(() -> new LaunchConfig(1, 1, 0, " ", 1, t)).hasMessageContaining("master address");
        assertThatThrownBy(() -> new LaunchConfig(1, 1, 0, "h", 0, t)).hasMessageContaining("master port");
        assertThatThrownBy(() -> new LaunchConfig(1, 1, 0, "h", 1, Duration.ZERO)).hasMessageContaining("timeout");
        assertThat(LaunchConfig.singleNode(3, t).withTimeout(Duration.ofSeconds(9)).timeout())
                .isEqualTo(Duration.ofSeconds(9));
    }

    private static void assertError(Map<String, String> env, int nproc, String message) {
        assertThatThrownBy(() -> LaunchConfig.fromEnvironment(env, nproc))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining(message);
    }
}
