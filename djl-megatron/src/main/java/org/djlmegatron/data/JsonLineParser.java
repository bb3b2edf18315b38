package org.djlmegatron.data;

import java.nio.ByteBuffer;
import java.nio.CharBuffer;
import java.nio.charset.CharsetDecoder;
import java.nio.charset.CoderResult;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * Takes the text fields out of one JSONL line, accepting what Python's {@code json.loads} accepts
 * (Megatron's reader) and refusing the rest with a one-line reason.
 *
 * <p>Strict UTF-8 (Python decodes the file strictly too), RFC 8259 JSON plus Python's
 * {@code NaN}/{@code Infinity} literals, no raw control characters inside strings, a JSON object
 * at the top, duplicate keys resolved to the last. A wanted field is a string (one document) or
 * an array of strings (sentences of one document, as Megatron reads it). Not thread-safe: one
 * parser per worker task.
 */
final class JsonLineParser {

    private static final int MAX_DEPTH = 512;

    private final List<String> keys;
    private final CharsetDecoder utf8 = StandardCharsets.UTF_8.newDecoder()
            .onMalformedInput(CodingErrorAction.REPORT).onUnmappableCharacter(CodingErrorAction.REPORT);
    private final StringBuilder sb = new StringBuilder();
    private String s;
    private int pos;
    private int quoteAt;
    private int backslashAt;
    private int controlAt;
    private boolean escapedSurrogate;

    JsonLineParser(List<String> keys) {
        this.keys = keys;
    }

    /**
     * The sentences of each wanted key, in {@code keys} order, or null for a blank line.
     *
     * @throws InvalidDataException naming the byte or column and what was expected and found
     */
    String[][] parse(byte[] data, int from, int to) {
        if (to - from >= 3 && data[from] == (byte) 0xEF && data[from + 1] == (byte) 0xBB && data[from + 2] == (byte) 0xBF) {
            from += 3; // a UTF-8 byte order mark
        }
        s = decode(data, from, to);
        rewind();
        skipWhitespace();
        if (pos == s.length()) {
            return null;
        }
        if (s.charAt(pos) != '{') {
            throw error("expected a JSON object, found " + describeValueAt());
        }
        String[][] found = new String[keys.size()][];
        pos++;
        skipWhitespace();
        if (peek() == '}') {
            pos++;
        } else {
            while (true) {
                expect('"', "a quoted key");
                String name = string();
                skipWhitespace();
                expect(':', "':' after key \"" + name + "\"");
                skipWhitespace();
                int k = keys.indexOf(name);
                if (k >= 0) {
                    found[k] = field(name);
                } else {
                    skipValue(1);
                }
                skipWhitespace();
                char c = peek();
                pos++;
                if (c == '}') {
                    break;
                }
                if (c != ',') {
                    pos--;
                    throw error("expected ',' or '}' in the object, found " + describeCharAt());
                }
                skipWhitespace();
            }
        }
        skipWhitespace();
        if (pos != s.length()) {
            throw error("unexpected " + describeCharAt() + " after the JSON object");
        }
        for (int k = 0; k < found.length; k++) {
            if (found[k] == null) {
                throw new InvalidDataException("no key \"" + keys.get(k) + "\" (keys found: " + keyList() + ")");
            }
        }
        return found;
    }

    /** A wanted field's value: a string or an array of strings. */
    private String[] field(String name) {
        char c = peek();
        escapedSurrogate = false;
        if (c == '"') {
            pos++;
            return new String[] {checkedText(name, string())};
        }
        if (c == '[') {
            pos++;
            List<String> sentences = new ArrayList<>();
            skipWhitespace();
            if (peek() == ']') {
                pos++;
                return new String[0];
            }
            while (true) {
                skipWhitespace();
                if (peek() != '"') {
                    throw new InvalidDataException("field \"" + name + "\": expected a string in the array, found "
                            + describeValueAt());
                }
                pos++;
                sentences.add(checkedText(name, string()));
                skipWhitespace();
                char d = peek();
                pos++;
                if (d == ']') {
                    return sentences.toArray(new String[0]);
                }
                if (d != ',') {
                    pos--;
                    throw error("expected ',' or ']' in the array, found " + describeCharAt());
                }
            }
        }
        throw new InvalidDataException("field \"" + name + "\": expected a string or an array of strings, found "
                + describeValueAt());
    }

    /**
     * Text with an unpaired surrogate cannot reach the tokenizer. Only a {@code \\uD800}-style
     * escape can make one (decoded UTF-8 pairs them), so only such texts are scanned.
     */
    private String checkedText(String name, String text) {
        if (!escapedSurrogate) {
            return text;
        }
        escapedSurrogate = false;
        for (int i = 0; i < text.length(); i++) {
            char c = text.charAt(i);
            if (Character.isHighSurrogate(c) && i + 1 < text.length() && Character.isLowSurrogate(text.charAt(i + 1))) {
                i++;
            } else if (Character.isSurrogate(c)) {
                throw new InvalidDataException(String.format(
                        "field \"%s\": unpaired surrogate \\u%04x at character %d of the text", name, (int) c, i));
            }
        }
        return text;
    }

    /**
     * The rest of a string whose opening quote was consumed. Text between escapes is found with
     * {@code indexOf} and copied whole: the long text fields are most of the input, and this stays
     * fast before the JIT has compiled anything (a CLI run is over in about a second).
     */
    private String string() {
        int start = pos;
        int run = pos;
        sb.setLength(0);
        while (true) {
            int quote = next('"', pos);
            if (quote == s.length()) {
                pos = start - 1;
                throw error("unterminated string");
            }
            int escape = next('\\', pos);
            int control = nextControl(pos);
            if (control < quote && control < escape) {
                pos = control;
                throw error(String.format("raw control character U+%04X in a string (must be escaped)",
                        (int) s.charAt(control)));
            }
            if (quote < escape) {
                String out = sb.length() == 0 ? s.substring(run, quote) : sb.append(s, run, quote).toString();
                pos = quote + 1;
                return out;
            }
            sb.append(s, run, escape);
            pos = escape + 1;
            if (pos >= s.length()) {
                throw error("unterminated string");
            }
            char e = s.charAt(pos++);
            switch (e) {
                case '"', '\\', '/' -> sb.append(e);
                case 'b' -> sb.append('\b');
                case 'f' -> sb.append('\f');
                case 'n' -> sb.append('\n');
                case 'r' -> sb.append('\r');
                case 't' -> sb.append('\t');
                case 'u' -> {
                    char u = hex4();
                    escapedSurrogate |= Character.isSurrogate(u);
                    sb.append(u);
                }
                default -> {
                    pos -= 2;
                    throw error("invalid escape \\" + e);
                }
            }
            run = pos;
        }
    }

    /**
     * The next {@code '"'} or {@code '\\'} at or after {@code from}, or the line length. Cached
     * per character, since positions only grow: a text with many escapes is still scanned once.
     */
    private int next(char c, int from) {
        int i = c == '"' ? quoteAt : backslashAt;
        if (i < from) {
            i = s.indexOf(c, from);
            i = i < 0 ? s.length() : i;
            if (c == '"') {
                quoteAt = i;
            } else {
                backslashAt = i;
            }
        }
        return i;
    }

    /** The next character below U+0020 at or after {@code from}, or the line length; cached likewise. */
    private int nextControl(int from) {
        if (controlAt < from) {
            int i = from;
            while (i < s.length() && s.charAt(i) >= 0x20) {
                i++;
            }
            controlAt = i;
        }
        return controlAt;
    }

    private char hex4() {
        if (pos + 4 > s.length()) {
            throw error("truncated \\u escape");
        }
        int v = 0;
        for (int i = 0; i < 4; i++) {
            int d = Character.digit(s.charAt(pos + i), 16);
            if (d < 0) {
                throw error("invalid \\u escape \\u" + s.substring(pos, pos + 4));
            }
            v = v * 16 + d;
        }
        pos += 4;
        return (char) v;
    }

    private void skipValue(int depth) {
        if (depth > MAX_DEPTH) {
            throw error("JSON nested deeper than " + MAX_DEPTH + " levels");
        }
        char c = peek();
        switch (c) {
            case '"' -> {
                pos++;
                string();
            }
            case '{', '[' -> {
                char close = c == '{' ? '}' : ']';
                pos++;
                skipWhitespace();
                if (peek() == close) {
                    pos++;
                    return;
                }
                while (true) {
                    skipWhitespace();
                    if (c == '{') {
                        expect('"', "a quoted key");
                        string();
                        skipWhitespace();
                        expect(':', "':' after a key");
                        skipWhitespace();
                    }
                    skipValue(depth + 1);
                    skipWhitespace();
                    char d = peek();
                    pos++;
                    if (d == close) {
                        return;
                    }
                    if (d != ',') {
                        pos--;
                        throw error("expected ',' or '" + close + "', found " + describeCharAt());
                    }
                }
            }
            default -> {
                for (String literal : new String[] {"true", "false", "null", "NaN", "Infinity", "-Infinity"}) {
                    if (s.startsWith(literal, pos)) {
                        pos += literal.length();
                        return;
                    }
                }
                number();
            }
        }
    }

    /** -?(0|[1-9]d*)(.d+)?([eE][+-]?d+)? */
    private void number() {
        int start = pos;
        if (peek() == '-') {
            pos++;
        }
        if (peek() == '0') {
            pos++;
        } else if (digits() == 0) {
            pos = start;
            throw error("expected a JSON value, found " + describeCharAt());
        }
        if (peek() == '.') {
            pos++;
            if (digits() == 0) {
                throw error("expected digits after '.' in a number");
            }
        }
        if (peek() == 'e' || peek() == 'E') {
            pos++;
            if (peek() == '+' || peek() == '-') {
                pos++;
            }
            if (digits() == 0) {
                throw error("expected digits in a number's exponent");
            }
        }
    }

    private int digits() {
        int n = 0;
        while (pos < s.length() && s.charAt(pos) >= '0' && s.charAt(pos) <= '9') {
            pos++;
            n++;
        }
        return n;
    }

    private void expect(char c, String what) {
        if (peek() != c) {
            throw error("expected " + what + ", found " + describeCharAt());
        }
        pos++;
    }

    /** The next character, or U+0000 at the end (never valid where a peek decides anything). */
    private char peek() {
        return pos < s.length() ? s.charAt(pos) : '\0';
    }

    private void skipWhitespace() {
        while (pos < s.length()) {
            char c = s.charAt(pos);
            if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
                return;
            }
            pos++;
        }
    }

    private String describeCharAt() {
        if (pos >= s.length()) {
            return "the end of the line";
        }
        char c = s.charAt(pos);
        return c < 0x20 || c == 0x7F ? String.format("U+%04X", (int) c) : "'" + c + "'";
    }

    private String describeValueAt() {
        return switch (peek()) {
            case '{' -> "an object";
            case '[' -> "an array";
            case '"' -> "a string";
            case 't', 'f' -> "a boolean";
            case 'n' -> "null";
            case '\0' -> "the end of the line";
            default -> peek() == '-' || Character.isDigit(peek()) ? "a number" : describeCharAt();
        };
    }

    private String keyList() {
        List<String> names = new ArrayList<>();
        rewind();
        skipWhitespace();
        pos++;
        skipWhitespace();
        while (peek() == '"') {
            pos++;
            names.add(string());
            skipWhitespace();
            pos++;
            skipWhitespace();
            skipValue(1);
            skipWhitespace();
            pos++;
            skipWhitespace();
        }
        return names.isEmpty() ? "none" : String.join(", ", names);
    }

    private void rewind() {
        pos = 0;
        quoteAt = -1;
        backslashAt = -1;
        controlAt = -1;
    }

    private InvalidDataException error(String message) {
        return new InvalidDataException("malformed JSON at column " + (pos + 1) + ": " + message);
    }

    /**
     * Strict UTF-8. The JDK's replacing decoder is much faster (vectorised, and warm from
     * startup); only a line that then shows U+FFFD is decoded again strictly, to tell an encoded
     * U+FFFD from a malformed byte and to name that byte.
     */
    private String decode(byte[] data, int from, int to) {
        String fast = new String(data, from, to - from, StandardCharsets.UTF_8);
        if (fast.indexOf('\uFFFD') < 0) {
            return fast;
        }
        ByteBuffer in = ByteBuffer.wrap(data, from, to - from);
        CharBuffer out = CharBuffer.allocate(to - from);
        utf8.reset();
        CoderResult r = utf8.decode(in, out, true);
        if (r.isError()) {
            int at = in.position() - from;
            throw new InvalidDataException("invalid UTF-8 at byte " + (at + 1) + " of the line: "
                    + hex(Arrays.copyOfRange(data, from + at, Math.min(to, from + at + Math.max(1, r.length())))));
        }
        return fast;
    }

    private static String hex(byte[] bytes) {
        StringBuilder b = new StringBuilder();
        for (byte x : bytes) {
            b.append(b.length() == 0 ? "" : " ").append(String.format("%02x", x & 0xFF));
        }
        return b.toString();
    }
}
