package io.hspmn.cli;

import io.hspmn.BackendUnavailableException;
import io.hspmn.HspmnException;
import io.hspmn.args.BadOptionException;
import io.hspmn.bench.Bench;
import io.hspmn.data.CorpusException;
import io.hspmn.demo.Demo;

import java.io.IOException;
import java.io.PrintStream;
import java.util.Arrays;
import java.util.Locale;

/**
 * The {@code hspmn} command line, the jar's entry point:
 * <pre>
 *   java --enable-native-access=ALL-UNNAMED -jar hspmn.jar COMMAND [options]
 *     train    train a byte-level language model on a text corpus, with checkpoints and resume
 *     verify   check a checkpoint file (structure, names and shapes against its config, finiteness)
 *     sample   continue a prompt greedily with a trained checkpoint
 *     eval     bits per byte of a checkpoint over the whole held-out text, routed fraction, tok/s
 *     serve    the HTTP service: streamed generation and scoring (runs until stopped)
 *     demo     one block forward and backward on random data (ci/demo.sh)
 *     bench    the block benchmark (ci/bench.sh)
 * </pre>
 * Exit status: 0 success, 1 failure (a verify that found problems, a native or I/O error during a run, a
 * port serve cannot listen on), 2 a command line or input the user must fix (unknown or bad option,
 * missing file, unusable corpus); these print one message, never a stack trace. {@code serve} runs until
 * a signal stops it (it then closes the server; the JVM exits 130 for SIGINT, 143 for SIGTERM).
 */
public final class Main {
    static final int OK = 0;
    static final int FAILED = 1;
    static final int USAGE = 2;

    private Main() {
    }

    public static void main(String[] args) {
        int status = run(args, System.out, System.err);
        System.out.flush();
        System.exit(status);
    }

    static String usage() {
        return """
                usage: hspmn COMMAND [options]     (java --enable-native-access=ALL-UNNAMED -jar hspmn.jar ...)

                commands:
                  train    train a byte-level HSPMN language model on UTF-8 text; checkpoints, metrics, resume
                  verify   check a checkpoint: structure, names and shapes against its config, finite values
                  sample   continue a prompt greedily with a trained checkpoint
                  eval     bits per byte of a checkpoint over the whole held-out text; routed fraction, tok/s
                  serve    the HTTP service: streamed generation and scoring (runs until stopped)
                  demo     run one block forward and backward on random data
                  bench    the block benchmark

                'hspmn COMMAND --help' lists a command's options.
                """;
    }

    /** Runs one command; returns the exit status. Output goes to {@code out}, messages to {@code err}. */
    public static int run(String[] args, PrintStream out, PrintStream err) {
        if (args.length == 0) {
            err.print(usage());
            return USAGE;
        }
        String command = args[0].toLowerCase(Locale.ROOT);
        String[] rest = Arrays.copyOfRange(args, 1, args.length);
        try {
            return switch (command) {
                case "train" -> TrainCommand.run(rest, out, err);
                case "verify" -> VerifyCommand.run(rest, out, err);
                case "sample" -> SampleCommand.run(rest, out, err);
                case "eval" -> EvalCommand.run(rest, out, err);
                case "serve" -> ServeCommand.run(rest, out, err);
                case "demo" -> {
                    Demo.main(rest);
                    yield OK;
                }
                case "bench" -> {
                    Bench.main(rest);
                    yield OK;
                }
                case "help", "--help", "-h" -> {
                    out.print(usage());
                    yield OK;
                }
                default -> throw new UsageException("unknown command '" + args[0] + "'; commands: train, verify, sample, eval, serve, demo, bench");
            };
        } catch (UsageException | BadOptionException e) {
            err.println("error: " + e.getMessage());
            if (command.equals("train") || command.equals("verify") || command.equals("sample") || command.equals("eval") || command.equals("serve")) {
                err.println("run 'hspmn " + command + " --help' for its options");
            } else {
                err.print(usage());
            }
            return USAGE;
        } catch (CorpusException | BackendUnavailableException e) {
            // the data or the requested backend: something the user chose
            err.println("error: " + e.getMessage());
            return USAGE;
        } catch (HspmnException e) {
            err.println("error: " + e.getMessage());
            return FAILED;
        } catch (IOException e) {
            err.println("error: " + describe(e));
            return FAILED;
        }
    }

    /** An I/O error as one line: its message with the path, without the exception class noise. */
    static String describe(IOException e) {
        String msg = e.getMessage();
        if (e instanceof java.nio.file.NoSuchFileException n) {
            return "no such file: " + n.getFile() + (n.getReason() != null ? " (" + n.getReason() + ")" : "");
        }
        if (e instanceof java.nio.file.AccessDeniedException a) {
            return "permission denied: " + a.getFile();
        }
        return msg != null ? msg : e.toString();
    }
}
