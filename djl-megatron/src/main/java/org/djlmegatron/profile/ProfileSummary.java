package org.djlmegatron.profile;

import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParseException;
import com.google.gson.JsonParser;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.Deque;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * Self time per operator in a chrome://tracing file (libtorch's profiler: a list of events, or an
 * object with {@code traceEvents}): complete events ({@code "ph": "X"}) nest by time on each
 * thread; an event's self time is its duration less its children's. What a reader of a trace
 * wants first: which operators the time went to, and how many calls.
 */
public final class ProfileSummary {

    /** One operator's self time (microseconds) and calls. */
    public record Row(String name, double selfMicros, int calls) {}

    private final List<Row> rows;
    private final double totalMicros;

    private ProfileSummary(List<Row> rows) {
        this.rows = rows;
        this.totalMicros = rows.stream().mapToDouble(Row::selfMicros).sum();
    }

    /** Reads {@code trace}; a file that is not a trace is refused naming it. */
    public static ProfileSummary read(Path trace) throws IOException {
        JsonElement root;
        try {
            root = JsonParser.parseString(Files.readString(trace));
        } catch (JsonParseException e) {
            throw new IOException(trace + ": not a chrome://tracing JSON file (" + e.getMessage() + ")", e);
        }
        JsonArray events = root.isJsonArray() ? root.getAsJsonArray()
                : root.isJsonObject() && root.getAsJsonObject().has("traceEvents")
                        ? root.getAsJsonObject().getAsJsonArray("traceEvents") : null;
        if (events == null) {
            throw new IOException(trace + ": expected a list of events or an object with traceEvents");
        }
        return of(complete(events));
    }

    private record Event(String name, Object thread, double start, double duration) {
        double end() {
            return start + duration;
        }
    }

    private static List<Event> complete(JsonArray events) {
        List<Event> out = new ArrayList<>();
        for (JsonElement e : events) {
            if (!e.isJsonObject()) {
                continue;
            }
            JsonObject o = e.getAsJsonObject();
            if (!o.has("ph") || !"X".equals(o.get("ph").getAsString()) || !o.has("dur") || !o.has("ts")) {
                continue; // instants, counters, metadata: no duration to attribute
            }
            Object thread = o.has("tid") ? o.get("tid").toString() : "";
            out.add(new Event(o.get("name").getAsString(), thread, o.get("ts").getAsDouble(), o.get("dur").getAsDouble()));
        }
        return out;
    }

    private static ProfileSummary of(List<Event> events) {
        Map<Object, List<Event>> byThread = new HashMap<>();
        events.forEach(e -> byThread.computeIfAbsent(e.thread(), t -> new ArrayList<>()).add(e));
        Map<String, double[]> self = new HashMap<>(); // name -> {self micros, calls}
        for (List<Event> thread : byThread.values()) {
            thread.sort(Comparator.comparingDouble(Event::start).thenComparing(Comparator.comparingDouble(Event::duration).reversed()));
            Deque<Event> open = new ArrayDeque<>();
            for (Event e : thread) {
                while (!open.isEmpty() && open.peek().end() <= e.start()) {
                    open.pop();
                }
                if (!open.isEmpty()) {
                    self.computeIfAbsent(open.peek().name(), n -> new double[2])[0] -= e.duration();
                }
                double[] row = self.computeIfAbsent(e.name(), n -> new double[2]);
                row[0] += e.duration();
                row[1]++;
                open.push(e);
            }
        }
        List<Row> rows = new ArrayList<>();
        self.forEach((name, v) -> rows.add(new Row(name, v[0], (int) v[1])));
        rows.sort(Comparator.comparingDouble(Row::selfMicros).reversed().thenComparing(Row::name));
        return new ProfileSummary(rows);
    }

    /** Every operator, most self time first. */
    public List<Row> rows() {
        return rows;
    }

    /** Sum of self times: the time the trace's threads spent inside recorded operators. */
    public double totalMicros() {
        return totalMicros;
    }

    /** The first {@code n} rows as a table: milliseconds, share, calls, name. */
    public String table(int n) {
        StringBuilder sb = new StringBuilder(String.format(Locale.ROOT, "%10s %6s %7s  %s%n", "self ms", "share", "calls", "operator"));
        for (Row r : rows.subList(0, Math.min(n, rows.size()))) {
            sb.append(String.format(Locale.ROOT, "%10.1f %5.1f%% %7d  %s%n", r.selfMicros() / 1e3,
                    totalMicros == 0 ? 0 : 100 * r.selfMicros() / totalMicros, r.calls(), r.name()));
        }
        return sb.toString();
    }
}
