package org.djlmegatron.examples;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import picocli.CommandLine;

/** Runs each example program with short settings and checks what it shows its reader. */
class ExamplesTest {

    @TempDir
    Path tmp;

    private static Path fixtures() {
        return Path.of(System.getProperty("djlm.repo.root", ".")).resolve("../shared/fixtures")
                .toAbsolutePath().normalize();
    }

    private static PrintStream quiet() {
        return new PrintStream(new ByteArrayOutputStream(), true, StandardCharsets.UTF_8);
    }

    @Test
    void pretrainFromScratchLearnsTheCorpus() throws Exception {
        PretrainFromScratch.Result r = PretrainFromScratch.run(tmp, 60, 2, quiet());
        assertThat(r.losses()).hasSize(60);
        assertThat(r.losses().get(0)).isGreaterThan(5.0); // ln(384) = 5.95 for a random model
        assertThat(mean(r.losses().subList(50, 60))).isLessThan(2.0);
        assertThat(r.accuracy()).isGreaterThan(0.4);
        assertThat(Files.exists(tmp.resolve("sentences.bin"))).isTrue();
    }

    @Test
    void easyTrainGptLearnsAtTensorParallelTwo() {
        List<org.djlmegatron.training.StepResult> steps = EasyTrainGpt.run(30, quiet());
        assertThat(steps).hasSize(30);
        assertThat(steps.get(0).loss()).isGreaterThan(4.5); // ln(128) = 4.85 for a random model
        assertThat(steps.get(29).loss()).isLessThan(steps.get(0).loss() - 0.5); // 50 steps: 4.87 -> 2.47
    }

    @Test
    void finetuneFromHfExportsExactlyTheTrainedModel() {
        FinetuneFromHf.Result r = FinetuneFromHf.run(fixtures().resolve("hf/llama"), 30, tmp, quiet());
        assertThat(r.steps()).hasSize(30);
        assertThat(r.steps().get(29).loss()).isLessThan(r.steps().get(0).loss() - 0.3);
        assertThat(r.exportedVsTrained()).isZero();
        assertThat(r.trainedVsOriginal()).isGreaterThan(1e-2);
        assertThat(r.exported().resolve("config.json")).exists();
        assertThat(r.exported().resolve("model.safetensors")).exists();
    }

    @Test
    void programsNameWhereTheyWriteAndRemoveTheirTemporaryFolder() {
        ByteArrayOutputStream buf = new ByteArrayOutputStream();
        PrintStream old = System.out;
        System.setOut(new PrintStream(buf, true, StandardCharsets.UTF_8));
        int rc;
        try {
            rc = new picocli.CommandLine(new ConvertCheckpoints()).execute("--input", fixtures().resolve("hf/llama").toString());
        } finally {
            System.setOut(old);
        }
        String out = buf.toString(StandardCharsets.UTF_8);
        assertThat(rc).isZero();
        java.util.regex.Matcher m = java.util.regex.Pattern.compile("writing to the temporary folder (\\S+) ").matcher(out);
        assertThat(m.find()).as(out).isTrue();
        Path dir = Path.of(m.group(1));
        assertThat(out).contains("removed " + dir);
        assertThat(dir).doesNotExist();
    }

    @Test
    void convertCheckpointsRoundTripsEveryTensor() throws Exception {
        ConvertCheckpoints.Result r = ConvertCheckpoints.run(fixtures().resolve("hf/llama"), tmp, quiet());
        assertThat(r.tensors()).isGreaterThan(10);
        assertThat(r.identical()).isEqualTo(r.tensors());
        assertThat(r.logitsDiff()).isLessThanOrEqualTo(1e-4);
        assertThat(r.files()).anyMatch(f -> f.contains("mp_rank_01_001/model_optim_rng.pt"))
                .anyMatch(f -> f.contains("__0_0.distcp")).anyMatch(f -> f.contains("hf-again/model.safetensors"));
    }

    @Test
    void bringYourOwnModelTrainsTheSameAtTp1AndTp2() {
        List<Double> tp1 = BringYourOwnModel.train(1, 60);
        List<Double> tp2 = BringYourOwnModel.train(2, 60);
        assertThat(tp2.get(0)).isGreaterThan(4.5); // ln(128) = 4.85
        assertThat(mean(tp2.subList(50, 60))).isLessThan(tp2.get(0) - 1.0);
        assertThat(BringYourOwnModel.maxDiff(tp1, tp2)).isLessThan(1e-3);
    }

    @Test
    void mainsRunFromTheirCommandLines() {
        ByteArrayOutputStream buf = new ByteArrayOutputStream();
        PrintStream old = System.out;
        System.setOut(new PrintStream(buf, true, StandardCharsets.UTF_8));
        try {
            assertThat(new CommandLine(new BringYourOwnModel()).execute("--train-iters", "20")).isZero();
            assertThat(new CommandLine(new ConvertCheckpoints()).execute("--input",
                    fixtures().resolve("hf/qwen2").toString(), "--work-dir", tmp.resolve("convert").toString())).isZero();
        } finally {
            System.setOut(old);
        }
        assertThat(buf.toString(StandardCharsets.UTF_8))
                .contains("loss went down").contains("TP=1 and TP=2 agree")
                .contains("tensors identical after HF -> megatron -> megatron-dist -> HF");
    }

    private static double mean(List<Double> xs) {
        return xs.stream().mapToDouble(Double::doubleValue).average().orElseThrow();
    }
}
