package io.hspmn.cli;

import com.google.gson.JsonObject;
import io.hspmn.serve.LoadClient;
import io.hspmn.serve.Server;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.net.ServerSocket;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** {@code hspmn serve}: help, user errors (exit 2), a port in use (exit 1), and a served load of 4 streams. */
@Timeout(180)
class ServeCommandTest {
    static final String[] TINY = {"--random", "--port", "0", "--backend", "cpu", "--threads", "1", "--dim", "32",
            "--heads", "2", "--kv-heads", "1", "--layers", "1", "--max-batch", "4", "--max-concurrent", "8",
            "--prefill-chunk", "16", "--body-timeout-ms", "5000"};

    @Test
    void helpAndUserErrors() {
        CliTest.Result help = CliTest.run("serve", "--help");
        assertEquals(0, help.exit(), help.all());
        assertTrue(help.out().contains("usage: hspmn serve (--ckpt PATH | --random)"), help.out());
        assertTrue(help.out().contains("--prefill-chunk N"), help.out());
        assertTrue(help.out().contains("--body-timeout-ms N"), help.out());
        assertTrue(CliTest.run("--help").out().contains("serve"));
        CliTest.Result bad = CliTest.run("serve", "--random", "--bogus", "1");
        assertEquals(2, bad.exit());
        assertTrue(bad.err().contains("unknown option --bogus") && bad.err().contains("hspmn serve --help"), bad.err());
        assertFalse(bad.err().contains("at io.hspmn"), "no stack trace: " + bad.err());
        CliTest.Result noModel = CliTest.run("serve");
        assertEquals(2, noModel.exit());
        assertTrue(noModel.err().contains("--ckpt PATH and --random"), noModel.err());
        CliTest.Result noCkpt = CliTest.run("serve", "--ckpt", "/nonexistent/run");
        assertEquals(2, noCkpt.exit(), noCkpt.all());
        assertTrue(noCkpt.err().contains("no checkpoint at"), noCkpt.err());
        assertEquals(2, CliTest.run("serve", "--random", "--prefill-chunk", "0").exit());
    }

    @Test
    void aPortInUseFailsWithOneMessage() throws Exception {
        try (ServerSocket taken = new ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress())) {
            String[] a = TINY.clone();
            a[2] = String.valueOf(taken.getLocalPort());
            CliTest.Result r = CliTest.run(prepend(a));
            assertEquals(1, r.exit(), r.all());
            assertTrue(r.err().startsWith("error: cannot listen on 127.0.0.1:" + taken.getLocalPort()), r.err());
        }
    }

    private static String[] prepend(String[] a) {
        String[] s = new String[a.length + 1];
        s[0] = "serve";
        System.arraycopy(a, 0, s, 1, a.length);
        return s;
    }

    /** The command serves until stopped; the load client's 4 streams all get their tokens. */
    @Test
    void servesALoadUntilStopped() throws Exception {
        CompletableFuture<Server> started = new CompletableFuture<>();
        CountDownLatch stop = new CountDownLatch(1);
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        ByteArrayOutputStream err = new ByteArrayOutputStream();
        CompletableFuture<Integer> exit = CompletableFuture.supplyAsync(() -> {
            try {
                return ServeCommand.run(TINY, new PrintStream(out, true, StandardCharsets.UTF_8),
                        new PrintStream(err, true, StandardCharsets.UTF_8), started::complete, stop);
            } catch (UsageException e) {
                throw new IllegalStateException(e);
            }
        });
        Server server = started.get(60, TimeUnit.SECONDS);
        String printed = out.toString(StandardCharsets.UTF_8);
        assertTrue(printed.startsWith("hspmn serve: listening on " + server.uri()), printed);
        assertTrue(printed.contains("prefill-chunk=16"), printed);
        assertTrue(printed.contains("body-timeout=5000ms"), printed);
        JsonObject model = server.model();
        assertEquals("cpu", model.get("backend").getAsString());
        LoadClient.Report r;
        try (LoadClient c = new LoadClient(LoadClient.Options.of(server.uri(), 4, 2, 12))) {
            r = c.run();
        }
        System.out.println(r.summary());
        assertEquals(0, r.errors(), r.errorSamples().toString());
        assertEquals(4 * 2 * 12, r.tokens());
        stop.countDown();
        assertEquals(0, exit.get(60, TimeUnit.SECONDS));
        assertEquals("", err.toString(StandardCharsets.UTF_8));
    }
}
