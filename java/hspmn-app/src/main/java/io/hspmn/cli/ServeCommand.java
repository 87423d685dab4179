package io.hspmn.cli;

import io.hspmn.serve.Server;
import io.hspmn.serve.ServerOptions;

import java.io.PrintStream;
import java.io.UncheckedIOException;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;

/**
 * {@code hspmn serve}: the HTTP service ({@link Server}) until the process is stopped (SIGINT, SIGTERM);
 * options and endpoints in {@link ServerOptions#usage()}. Prints one line when it listens (with the
 * address: {@code --port 0} picks a free port) and one with the model.
 */
final class ServeCommand {
    private ServeCommand() {
    }

    static int run(String[] argv, PrintStream out, PrintStream err) throws UsageException {
        CountDownLatch stop = new CountDownLatch(1);
        CountDownLatch closed = new CountDownLatch(1);
        // on SIGINT / SIGTERM: let run() close the server (streams end, the model is freed), then exit
        Thread hook = new Thread(() -> {
            stop.countDown();
            try {
                closed.await(30, TimeUnit.SECONDS);
            } catch (InterruptedException ignored) {
                // exiting anyway
            }
        }, "hspmn-serve-shutdown");
        try {
            return run(argv, out, err, server -> Runtime.getRuntime().addShutdownHook(hook), stop);
        } finally {
            closed.countDown();
        }
    }

    /**
     * Serves until {@code stop} opens, then closes the server; {@code started} hears the server once it
     * listens (tests stop it through the latch; the command, through its shutdown hook).
     */
    static int run(String[] argv, PrintStream out, PrintStream err, Consumer<Server> started, CountDownLatch stop)
            throws UsageException {
        ServerOptions options;
        try {
            options = ServerOptions.parse(argv);
        } catch (IllegalArgumentException e) {
            throw new UsageException(e.getMessage());
        }
        if (options == null) {
            out.print(ServerOptions.usage());
            return Main.OK;
        }
        // Server's static initializer sets the JDK server's request-header deadline (maxReqTime) for every
        // server, this one included; request bodies have their own deadline (--body-timeout-ms)
        Server server;
        try {
            server = Server.start(options);
        } catch (IllegalArgumentException e) {
            // a checkpoint that is not there or not a checkpoint, limits the engine cannot hold
            throw new UsageException(e.getMessage());
        } catch (UncheckedIOException e) {
            err.println("error: " + e.getMessage());
            return Main.FAILED;
        }
        out.println("hspmn serve: listening on " + server.uri() + " (" + options + ")");
        out.println("model: " + server.model());
        out.flush();
        try {
            started.accept(server);
            boolean interrupted = false;
            while (true) {
                try {
                    stop.await();
                    break;
                } catch (InterruptedException e) {
                    interrupted = true;
                }
            }
            if (interrupted) {
                Thread.currentThread().interrupt();
            }
        } finally {
            server.close();
        }
        return Main.OK;
    }
}
