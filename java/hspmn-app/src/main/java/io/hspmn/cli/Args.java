package io.hspmn.cli;

import io.hspmn.args.CommandLine;

import java.util.Set;

/** The commands' {@link CommandLine}; its mistakes ({@link io.hspmn.args.BadOptionException}) exit with status 2. */
final class Args extends CommandLine {
    private Args() {
    }

    public static Args parse(String command, String[] args, Set<String> valued, Set<String> flags) {
        Args a = new Args();
        a.read(command, args, valued, flags);
        return a;
    }
}
