package io.hspmn.args;

import io.hspmn.Backend;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;

/**
 * {@code --name value}, {@code --name=value} and {@code --flag} options plus positional arguments, checked
 * against the options a program knows, and their values read as numbers, paths or a backend. Each option may be
 * given once; {@code --help} or {@code -h} anywhere sets {@link #help}. Every mistake is a
 * {@link BadOptionException} naming the option.
 */
public class CommandLine {
    /** The options given, by name without the dashes; a flag's value is "true". */
    public final Map<String, String> options = new LinkedHashMap<>();
    public final List<String> positional = new ArrayList<>();
    public boolean help;

    protected CommandLine() {
    }

    /**
     * @param command the program, for the unknown-option message ("unknown option --x for 'serve'")
     * @param valued  options that take a value
     * @param flags   options that take none (read as "true")
     */
    public static CommandLine parse(String command, String[] args, Set<String> valued, Set<String> flags) {
        CommandLine c = new CommandLine();
        c.read(command, args, valued, flags);
        return c;
    }

    protected final void read(String command, String[] args, Set<String> valued, Set<String> flags) {
        for (int i = 0; i < args.length; i++) {
            String arg = args[i];
            if (arg.equals("--help") || arg.equals("-h")) {
                help = true;
                continue;
            }
            if (!arg.startsWith("--") || arg.length() == 2) {
                positional.add(arg);
                continue;
            }
            String name = arg.substring(2);
            String value = null;
            int eq = name.indexOf('=');
            if (eq >= 0) {
                value = name.substring(eq + 1);
                name = name.substring(0, eq);
            }
            if (flags.contains(name)) {
                if (value != null) {
                    throw new BadOptionException("--" + name + " takes no value");
                }
                value = "true";
            } else if (valued.contains(name)) {
                if (value == null) {
                    if (i + 1 >= args.length || (args[i + 1].startsWith("--") && args[i + 1].length() > 2)) {
                        throw new BadOptionException("--" + name + " needs a value");
                    }
                    value = args[++i];
                }
            } else {
                throw new BadOptionException("unknown option --" + name + " for '" + command + "'");
            }
            if (options.put(name, value) != null) {
                throw new BadOptionException("--" + name + " is given twice");
            }
        }
    }

    /** Refuses positional arguments, for a program that takes options only. */
    public final void noPositional() {
        if (!positional.isEmpty()) {
            throw new BadOptionException("unexpected argument '" + positional.getFirst() + "' (options start with --)");
        }
    }

    public final String get(String name, String fallback) {
        return options.getOrDefault(name, fallback);
    }

    public final boolean flag(String name) {
        return options.containsKey(name);
    }

    public final String required(String name, String what) {
        String v = options.get(name);
        if (v == null) {
            throw new BadOptionException("--" + name + " is required: " + what);
        }
        return v;
    }

    /** The option as a path, or null when it is not given. */
    public final Path path(String name) {
        String v = options.get(name);
        return v == null ? null : Path.of(v);
    }

    /** An integer of at least {@code min}; {@code fallback} (a string, so it may come from elsewhere) when not given. */
    public final int intValue(String name, String fallback, int min) {
        return (int) longValue(name, fallback, min, Integer.MAX_VALUE);
    }

    /** Any int; its range is the caller's to check. */
    public final int intValue(String name, int fallback) {
        return (int) longValue(name, Integer.toString(fallback), Integer.MIN_VALUE, Integer.MAX_VALUE);
    }

    /** An integer in [lo, hi]. */
    public final long longValue(String name, long fallback, long lo, long hi) {
        return longValue(name, Long.toString(fallback), lo, hi);
    }

    private long longValue(String name, String fallback, long lo, long hi) {
        String v = get(name, fallback);
        long x;
        try {
            x = Long.parseLong(v.trim());
        } catch (NumberFormatException e) {
            throw new BadOptionException("--" + name + ": '" + v + "' is not an integer");
        }
        if (x < lo || x > hi) {
            boolean noCap = hi == Integer.MAX_VALUE || hi == Long.MAX_VALUE;
            throw new BadOptionException("--" + name + " (" + x + ") must be "
                    + (noCap && lo > Integer.MIN_VALUE ? ">= " + lo : "in [" + lo + ", " + hi + "]"));
        }
        return x;
    }

    /** A finite number. */
    public final double doubleValue(String name, double fallback) {
        String v = get(name, Double.toString(fallback));
        try {
            double x = Double.parseDouble(v.trim());
            if (Double.isFinite(x)) {
                return x;
            }
        } catch (NumberFormatException e) {
            // said below
        }
        throw new BadOptionException("--" + name + ": '" + v + "' is not a number");
    }

    /** {@code --backend auto|cpu|cuda} (any case), AUTO when not given. */
    public final Backend backend() {
        String v = get("backend", "auto");
        return switch (v.trim().toLowerCase(Locale.ROOT)) {
            case "auto" -> Backend.AUTO;
            case "cpu" -> Backend.CPU;
            case "cuda" -> Backend.CUDA;
            default -> throw new BadOptionException("--backend: '" + v + "' is not auto, cpu or cuda");
        };
    }
}
