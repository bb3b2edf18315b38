package org.djlmegatron.architecture;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;

/**
 * The project's main sources (every module's {@code src/main/java}) form no package cycle. A
 * package depends on another when one of its files names a type of it by an import or a fully
 * qualified name outside comments and string literals; same-package simple names cannot cross
 * packages, so imports plus qualified names are the whole graph.
 */
class PackageCyclesTest {

    private static final Pattern PACKAGE = Pattern.compile("(?m)^package\\s+([\\w.]+)\\s*;");
    private static final Pattern QUALIFIED = Pattern.compile("\\b((?:org|ai)\\.[a-z]\\w*(?:\\.[a-z]\\w*)*)\\.[A-Z]");
    private static final Pattern COMMENT_OR_STRING =
            Pattern.compile("/\\*.*?\\*/|//[^\\n]*|\"(?:\\\\.|[^\"\\\\\\n])*\"|'(?:\\\\.|[^'\\\\\\n])*'", Pattern.DOTALL);

    @Test
    void mainSourcesHaveNoPackageCycle() throws IOException {
        Path root = projectRoot();
        Map<String, Map<String, Set<String>>> graph = dependencies(root);
        assertTrue(graph.size() > 20, "found only " + graph.size() + " packages under " + root);
        List<List<String>> cycles = cycles(graph);
        StringBuilder why = new StringBuilder();
        for (List<String> cycle : cycles) {
            why.append("\ncycle ").append(cycle);
            for (String from : cycle) {
                for (String to : cycle) {
                    Set<String> files = graph.get(from).get(to);
                    if (files != null) {
                        why.append("\n  ").append(from).append(" -> ").append(to).append(" in ").append(files);
                    }
                }
            }
        }
        assertEquals(List.of(), cycles, "package cycles in the main sources:" + why);
    }

    /** The detector itself: a known two-cycle and a three-cycle are found, a chain is not. */
    @Test
    void detectorFindsCyclesAndOnlyCycles() {
        Map<String, Map<String, Set<String>>> g = new TreeMap<>();
        edge(g, "a", "b");
        edge(g, "b", "a");
        edge(g, "c", "d");
        edge(g, "d", "e");
        edge(g, "e", "c");
        edge(g, "e", "f");
        edge(g, "f", "g");
        assertEquals(List.of(List.of("a", "b"), List.of("c", "d", "e")), cycles(g));
    }

    private static void edge(Map<String, Map<String, Set<String>>> g, String from, String to) {
        g.computeIfAbsent(from, k -> new TreeMap<>()).computeIfAbsent(to, k -> new TreeSet<>()).add("test");
        g.computeIfAbsent(to, k -> new TreeMap<>());
    }

    /** The reactor root: the working directory or the first directory above it holding the djl-megatron module. */
    private static Path projectRoot() {
        Path start = Path.of("").toAbsolutePath();
        for (Path dir = start; dir != null; dir = dir.getParent()) {
            if (Files.isDirectory(dir.resolve("djl-megatron/src/main/java"))) {
                return dir;
            }
        }
        throw new IllegalStateException("no djl-megatron/src/main/java in " + start + " or above it");
    }

    /** package -> (package it depends on -> files that make the dependency), over the project's packages only. */
    private static Map<String, Map<String, Set<String>>> dependencies(Path root) throws IOException {
        Map<Path, String> packageOf = new HashMap<>();
        Map<Path, String> code = new HashMap<>();
        try (Stream<Path> modules = Files.list(root)) {
            for (Path module : modules.filter(m -> Files.isDirectory(m.resolve("src/main/java"))).toList()) {
                try (Stream<Path> files = Files.walk(module.resolve("src/main/java"))) {
                    files.filter(f -> f.toString().endsWith(".java")).forEach(f -> {
                        String text = COMMENT_OR_STRING.matcher(read(f)).replaceAll(" ");
                        Matcher p = PACKAGE.matcher(text);
                        if (p.find()) {
                            packageOf.put(f, p.group(1));
                            code.put(f, text);
                        }
                    });
                }
            }
        }
        Set<String> packages = new TreeSet<>(packageOf.values());
        Map<String, Map<String, Set<String>>> graph = new TreeMap<>();
        packages.forEach(p -> graph.put(p, new TreeMap<>()));
        for (Map.Entry<Path, String> file : code.entrySet()) {
            String from = packageOf.get(file.getKey());
            Matcher q = QUALIFIED.matcher(file.getValue());
            while (q.find()) {
                String to = q.group(1);
                if (packages.contains(to) && !to.equals(from)) {
                    graph.get(from).computeIfAbsent(to, k -> new TreeSet<>())
                            .add(root.relativize(file.getKey()).toString());
                }
            }
        }
        return graph;
    }

    private static String read(Path file) {
        try {
            return Files.readString(file);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read " + file, e);
        }
    }

    /** Strongly connected components of more than one package (Tarjan), each sorted, in sorted order. */
    static List<List<String>> cycles(Map<String, Map<String, Set<String>>> graph) {
        Map<String, Integer> index = new HashMap<>();
        Map<String, Integer> low = new HashMap<>();
        Deque<String> stack = new ArrayDeque<>();
        Set<String> onStack = new TreeSet<>();
        List<List<String>> found = new ArrayList<>();
        for (String v : graph.keySet()) {
            if (!index.containsKey(v)) {
                connect(v, graph, index, low, stack, onStack, found);
            }
        }
        found.sort((a, b) -> a.get(0).compareTo(b.get(0)));
        return found;
    }

    private static void connect(String v, Map<String, Map<String, Set<String>>> graph, Map<String, Integer> index,
            Map<String, Integer> low, Deque<String> stack, Set<String> onStack, List<List<String>> found) {
        index.put(v, index.size());
        low.put(v, index.get(v));
        stack.push(v);
        onStack.add(v);
        for (String w : graph.get(v).keySet()) {
            if (!index.containsKey(w)) {
                connect(w, graph, index, low, stack, onStack, found);
                low.put(v, Math.min(low.get(v), low.get(w)));
            } else if (onStack.contains(w)) {
                low.put(v, Math.min(low.get(v), index.get(w)));
            }
        }
        if (low.get(v).equals(index.get(v))) {
            List<String> component = new ArrayList<>();
            String w;
            do {
                w = stack.pop();
                onStack.remove(w);
                component.add(w);
            } while (!w.equals(v));
            if (component.size() > 1) {
                component.sort(null);
                found.add(component);
            }
        }
    }
}
