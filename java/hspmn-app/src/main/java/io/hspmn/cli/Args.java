package io.hspmn.cli;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * {@code --name value}, {@code --name=value} and {@code --flag} options plus positional arguments, checked
 * against the options a command knows. Each option may be given once.
 */
final class Args {
    final Map<String, String> options = new LinkedHashMap<>();
    final List<String> positional = new ArrayList<>();
    boolean help;

    /**
     * @param valued options that take a value
     * @param flags  options that take none (read as "true")
     */
    static Args parse(String command, String[] args, Set<String> valued, Set<String> flags) throws UsageException {
        Args a = new Args();
        for (int i = 0; i < args.length; i++) {
            String arg = args[i];
            if (arg.equals("--help") || arg.equals("-h")) {
                a.help = true;
                continue;
            }
            if (!arg.startsWith("--") || arg.length() == 2) {
                a.positional.add(arg);
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
                    throw new UsageException("--" + name + " takes no value");
                }
                value = "true";
            } else if (valued.contains(name)) {
                if (value == null) {
                    if (i + 1 >= args.length || (args[i + 1].startsWith("--") && args[i + 1].length() > 2)) {
                        throw new UsageException("--" + name + " needs a value");
                    }
                    value = args[++i];
                }
            } else {
                throw new UsageException("unknown option --" + name + " for '" + command + "'");
            }
            if (a.options.put(name, value) != null) {
                throw new UsageException("--" + name + " is given twice");
            }
        }
        return a;
    }

    String get(String name, String fallback) {
        return options.getOrDefault(name, fallback);
    }

    String required(String name, String what) throws UsageException {
        String v = options.get(name);
        if (v == null) {
            throw new UsageException("--" + name + " is required: " + what);
        }
        return v;
    }

    int intValue(String name, String fallback, int min) throws UsageException {
        String v = get(name, fallback);
        try {
            int x = Integer.parseInt(v.trim());
            if (x < min) {
                throw new UsageException("--" + name + " (" + x + ") must be >= " + min);
            }
            return x;
        } catch (NumberFormatException e) {
            throw new UsageException("--" + name + ": '" + v + "' is not an integer");
        }
    }
}
