package org.djlmegatron.cli;

import com.google.gson.JsonArray;
import com.google.gson.JsonObject;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.io.UncheckedIOException;
import java.io.Writer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;
import org.djlmegatron.generation.Generated;
import org.djlmegatron.generation.Prompt;
import org.djlmegatron.generation.Sampling;
import org.djlmegatron.generation.TextGenerator;
import org.djlmegatron.generation.TokenListener;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

/** {@code generate}: text (or token ids) from prompts, streamed, with the KV cache. */
@Command(name = "generate", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Generate from prompts (arguments, --prompts-file, --prompt-ids, or one per line on stdin) "
                + "with any checkpoint we read, at --tp ranks, streaming tokens to stdout as they come.",
            "Prompts are batched (--batch-size); each stops at the end-of-sequence id or after --max-new-tokens."})
final class GenerateCommand implements Callable<Integer> {

    @Mixin
    ModelOptions model;

    @Parameters(arity = "0..*", paramLabel = "PROMPT", description = "prompt texts (need a tokenizer)")
    List<String> texts = new ArrayList<>();

    @Option(names = "--prompts-file", description = "a file of prompt texts, one per line (empty lines skipped)")
    Path promptsFile;

    @Option(names = "--prompt-ids", paramLabel = "ID,ID,...", description = "a prompt as token ids, e.g. 5,17,42 "
            + "(repeatable; no tokenizer needed)")
    List<String> promptIds = new ArrayList<>();

    @Option(names = "--max-new-tokens", defaultValue = "32", description = "tokens to generate per prompt at most "
            + "(default: ${DEFAULT-VALUE})")
    int maxNewTokens;

    @Option(names = "--greedy", description = "always the most likely token (default: sample)")
    boolean greedy;

    @Option(names = "--temperature", defaultValue = "1.0", description = "sampling temperature, > 0 (default: ${DEFAULT-VALUE})")
    double temperature;

    @Option(names = "--top-k", defaultValue = "0", description = "sample among the k most likely tokens; 0: all "
            + "(default: ${DEFAULT-VALUE})")
    int topK;

    @Option(names = "--top-p", defaultValue = "1.0", description = "nucleus sampling: the smallest set reaching this "
            + "probability, in (0, 1] (default: ${DEFAULT-VALUE})")
    double topP;

    @Option(names = "--seed", defaultValue = "1234", description = "sampling seed; prompt i draws from seed + i, so "
            + "results do not depend on batching or --tp (default: ${DEFAULT-VALUE})")
    long seed;

    @Option(names = "--batch-size", defaultValue = "8", description = "prompts decoded together (default: ${DEFAULT-VALUE})")
    int batchSize;

    @Option(names = "--output", description = "JSONL file: one object per prompt, in order, with prompt_ids, ids "
            + "(the new tokens), finish_reason and, with a tokenizer, prompt and text (written atomically)")
    Path output;

    @Option(names = "--quiet", description = "do not stream tokens to stdout")
    boolean quiet;

    @Override
    public Integer call() throws IOException {
        if (!(temperature > 0)) {
            throw new IllegalArgumentException("--temperature must be > 0, found " + temperature + " (use --greedy)");
        }
        if (topK < 0) {
            throw new IllegalArgumentException("--top-k must be >= 0 (0: all tokens), found " + topK);
        }
        if (!(topP > 0 && topP <= 1)) {
            throw new IllegalArgumentException("--top-p must be in (0, 1], found " + topP);
        }
        Sampling sampling = greedy ? Sampling.GREEDY : Sampling.sample(temperature, topK, topP);
        if (batchSize < 1) {
            throw new IllegalArgumentException("--batch-size must be >= 1, found " + batchSize);
        }
        if (maxNewTokens < 0) {
            throw new IllegalArgumentException("--max-new-tokens must be >= 0, found " + maxNewTokens);
        }
        List<String> promptTexts = promptTexts();
        if (!promptTexts.isEmpty() && !promptIds.isEmpty()) {
            throw new IllegalArgumentException("give prompts as text or as --prompt-ids, not both");
        }
        if (promptTexts.isEmpty() && promptIds.isEmpty()) {
            promptTexts = readLines(new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8)), "stdin");
        }
        if (promptTexts.isEmpty() && promptIds.isEmpty()) {
            throw new IllegalArgumentException("no prompts: give PROMPT arguments, --prompts-file, --prompt-ids or lines on stdin");
        }
        List<long[]> ids = promptIds.isEmpty() ? null : parseIds(promptIds);
        try (TextGenerator gen = model.open()) {
            if (ids == null) {
                if (gen.tokenizer().isEmpty()) {
                    throw new IllegalArgumentException("no tokenizer: " + model.checkpoint + " has no tokenizer.json; give "
                            + "--tokenizer-model, or prompts as --prompt-ids");
                }
                ids = new ArrayList<>();
                for (int i = 0; i < promptTexts.size(); i++) {
                    if (promptTexts.get(i).isEmpty()) {
                        throw new IllegalArgumentException("prompt " + (i + 1) + " is empty");
                    }
                    ids.add(gen.encode(promptTexts.get(i)));
                }
            }
            List<Prompt> prompts = new ArrayList<>();
            for (int i = 0; i < ids.size(); i++) {
                prompts.add(new Prompt(ids.get(i), maxNewTokens, sampling, seed + i));
            }
            gen.check(prompts); // every refusal before the first token
            System.err.printf(Locale.ROOT, "> generating for %d prompt(s) at TP=%d, %s, context %d%s%n", prompts.size(),
                    model.tp, sampling.isGreedy() ? "greedy" : String.format(Locale.ROOT,
                            "temperature %.3g top-k %d top-p %.3g seed %d", temperature, topK, topP, seed),
                    gen.contextLength(), gen.eosId().map(e -> ", eos " + e).orElse(", no eos"));
            List<Generated> results = new ArrayList<>();
            for (int from = 0; from < prompts.size(); from += batchSize) {
                List<Prompt> batch = prompts.subList(from, Math.min(prompts.size(), from + batchSize));
                List<String> headers = new ArrayList<>();
                for (int i = from; i < from + batch.size(); i++) {
                    headers.add(promptIds.isEmpty() ? promptTexts.get(i) : "[" + join(ids.get(i)) + "] ->");
                }
                results.addAll(gen.generate(batch, false, new Stream(gen, System.out, headers, quiet)));
            }
            if (output != null) {
                writeJsonl(gen, results, promptTexts.isEmpty() ? null : promptTexts);
                System.err.println("> wrote " + results.size() + " result(s) to " + output);
            }
        }
        return 0;
    }

    private List<String> promptTexts() throws IOException {
        List<String> out = new ArrayList<>(texts);
        if (promptsFile != null) {
            if (!Files.isRegularFile(promptsFile)) {
                throw new IllegalArgumentException("--prompts-file " + promptsFile + ": no such file");
            }
            try (BufferedReader r = Files.newBufferedReader(promptsFile, StandardCharsets.UTF_8)) {
                out.addAll(readLines(r, promptsFile.toString()));
            }
        }
        return out;
    }

    private static List<String> readLines(BufferedReader r, String where) throws IOException {
        List<String> out = new ArrayList<>();
        String line;
        while ((line = r.readLine()) != null) {
            if (!line.isBlank()) {
                out.add(line);
            }
        }
        return out;
    }

    static List<long[]> parseIds(List<String> values) {
        List<long[]> out = new ArrayList<>();
        for (String v : values) {
            String[] parts = v.split(",");
            long[] ids = new long[parts.length];
            for (int i = 0; i < parts.length; i++) {
                try {
                    ids[i] = Long.parseLong(parts[i].strip());
                } catch (NumberFormatException e) {
                    throw new IllegalArgumentException("--prompt-ids " + v + ": \"" + parts[i]
                            + "\" is not a token id (expected comma-separated integers, e.g. 5,17,42)");
                }
            }
            out.add(ids);
        }
        return out;
    }

    private void writeJsonl(TextGenerator gen, List<Generated> results, List<String> texts) throws IOException {
        Path abs = output.toAbsolutePath();
        Path tmp = Files.createTempFile(abs.getParent(), abs.getFileName().toString(), ".partial");
        try (Writer w = Files.newBufferedWriter(tmp, StandardCharsets.UTF_8)) {
            for (int i = 0; i < results.size(); i++) {
                Generated g = results.get(i);
                JsonObject o = new JsonObject();
                if (texts != null) {
                    o.addProperty("prompt", texts.get(i));
                }
                o.add("prompt_ids", array(g.promptIds()));
                o.add("ids", array(g.ids()));
                if (gen.tokenizer().isPresent()) {
                    o.addProperty("text", gen.decode(g.ids()));
                }
                o.addProperty("finish_reason", g.finishReason());
                w.write(o.toString());
                w.write('\n');
            }
        } catch (IOException | RuntimeException e) {
            Files.deleteIfExists(tmp);
            throw e;
        }
        Files.move(tmp, abs, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
    }

    private static String join(long[] ids) {
        StringBuilder b = new StringBuilder();
        for (long id : ids) {
            b.append(b.length() > 0 ? "," : "").append(id);
        }
        return b.toString();
    }

    private static JsonArray array(long[] ids) {
        JsonArray a = new JsonArray();
        for (long id : ids) {
            a.add(id);
        }
        return a;
    }

    /**
     * Prints tokens as they come, one prompt after the other in order: the prompt currently shown
     * streams live, later ones are held until it is complete. Text through the tokenizer (the new
     * suffix of the decoded tokens so far, so multi-token characters come out whole), or ids.
     */
    private static final class Stream implements TokenListener {
        private final TextGenerator gen;
        private final PrintStream out;
        private final List<String> headers;
        private final boolean quiet;
        private final List<List<Long>> ids = new ArrayList<>();
        private final String[] shown;
        private final StringBuilder[] held;
        private final boolean[] finished;
        private int current = -1;

        Stream(TextGenerator gen, PrintStream out, List<String> headers, boolean quiet) {
            this.gen = gen;
            this.out = out;
            this.headers = headers;
            this.quiet = quiet;
            int rows = headers.size();
            shown = new String[rows];
            held = new StringBuilder[rows];
            finished = new boolean[rows];
            for (int i = 0; i < rows; i++) {
                ids.add(new ArrayList<>());
                shown[i] = "";
                held[i] = new StringBuilder();
            }
        }

        @Override
        public void onToken(int row, long id) {
            ids.get(row).add(id);
            if (quiet) {
                return;
            }
            if (current < 0) {
                advance();
            }
            if (gen.tokenizer().isPresent()) {
                emitText(row, false);
            } else {
                emit(row, " " + id);
            }
        }

        /** The decoded text not shown yet; held back while it ends in an incomplete character, unless final. */
        private void emitText(int row, boolean last) {
            String text = gen.decode(ids.get(row).stream().mapToLong(Long::longValue).toArray());
            if (!last && (!text.startsWith(shown[row]) || text.endsWith("\uFFFD"))) {
                return; // wait for the next token
            }
            String piece = text.startsWith(shown[row]) ? text.substring(shown[row].length()) : text;
            shown[row] = text;
            emit(row, piece);
        }

        private void emit(int row, String piece) {
            if (row == current) {
                out.print(piece);
                out.flush();
            } else {
                held[row].append(piece);
            }
        }

        @Override
        public void onFinish(int row) {
            finished[row] = true;
            if (quiet) {
                return;
            }
            if (current < 0) {
                advance();
            }
            if (gen.tokenizer().isPresent() && !ids.get(row).isEmpty()) {
                emitText(row, true);
            }
            while (current < headers.size() && finished[current]) {
                out.println();
                advance();
            }
            out.flush();
        }

        /** Shows the next prompt's header and what it has produced so far. */
        private void advance() {
            current++;
            if (current < headers.size()) {
                out.print(headers.get(current));
                out.print(held[current]);
            }
        }
    }
}
