package io.hspmn.demo;

import io.hspmn.Backend;
import io.hspmn.Block;
import io.hspmn.Context;
import io.hspmn.DType;
import io.hspmn.ForwardOptions;
import io.hspmn.Hspmn;
import io.hspmn.HspmnConfig;
import io.hspmn.NativeLibrary;
import io.hspmn.RouteResult;
import io.hspmn.Routing;
import io.hspmn.Tensor;

import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import java.util.SplittableRandom;

/**
 * Builds one block, runs an inference forward, a training forward + backward, and routing, and prints
 * shapes, backend, best-of-3 times after a warm-up, aux and the routed fraction.
 *
 * <pre>java --enable-native-access=ALL-UNNAMED -cp java/hspmn-app/target/hspmn-app-0.1.0-SNAPSHOT.jar:java/hspmn-app/target/lib/* io.hspmn.demo.Demo
 *      [--dim 256] [--seq 512] [--batch 2] [--heads 4] [--kv-heads 2] [--rho 0.2] [--routing topk] [--backend auto] [--seed 1]</pre>
 */
public final class Demo {
    private Demo() {
    }

    public static void main(String[] args) {
        Map<String, String> opt = new LinkedHashMap<>();
        opt.put("dim", "256");
        opt.put("seq", "512");
        opt.put("batch", "2");
        opt.put("heads", "4");
        opt.put("kv-heads", "2");
        opt.put("rho", "0.2");
        opt.put("routing", "topk");
        opt.put("backend", "auto");
        opt.put("seed", "1");
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            if (a.equals("--help") || a.equals("-h")) {
                System.out.println("usage: Demo " + String.join(" ", opt.keySet().stream().map(k -> "[--" + k + " " + opt.get(k) + "]").toList()));
                return;
            }
            if (!a.startsWith("--") || !opt.containsKey(a.substring(2)) || i + 1 >= args.length) {
                System.err.println("unknown or incomplete option '" + a + "'; options: " + opt.keySet());
                System.exit(2);
            }
            opt.put(a.substring(2), args[++i]);
        }
        int dim = Integer.parseInt(opt.get("dim"));
        int seq = Integer.parseInt(opt.get("seq"));
        int batch = Integer.parseInt(opt.get("batch"));
        long seed = Long.parseLong(opt.get("seed"));
        HspmnConfig config = HspmnConfig.builder()
                .dim(dim)
                .numHeads(Integer.parseInt(opt.get("heads")))
                .numKvHeads(Integer.parseInt(opt.get("kv-heads")))
                .sparsityK(Float.parseFloat(opt.get("rho")))
                .routing(Routing.parse(opt.get("routing")))
                .build()
                .validate();
        Backend backend = Backend.parse(opt.get("backend"));

        System.out.printf(Locale.ROOT, "%s (ABI %d) from %s%n", Hspmn.version(), Hspmn.abiVersion(), NativeLibrary.source());
        try (Context ctx = Context.create(backend);
             Block block = Block.create(ctx, config, seed);
             Tensor x = Tensor.create(ctx, DType.BF16, batch, seq, dim);
             Tensor out = Tensor.create(ctx, DType.BF16, batch, seq, dim);
             Tensor dOut = Tensor.create(ctx, DType.BF16, batch, seq, dim);
             Tensor dX = Tensor.create(ctx, DType.BF16, batch, seq, dim)) {
            SplittableRandom rnd = new SplittableRandom(seed);
            x.copyFrom(gaussian(rnd, x.numel()));
            dOut.copyFrom(gaussian(rnd, dOut.numel()));

            System.out.printf(Locale.ROOT, "backend %s (asked %s)%n", ctx.backend(), backend);
            System.out.printf(Locale.ROOT, "config  D=%d H=%d Hkv=%d Dh=%d F=%d routing=%s rho=%s%n", config.dim(),
                    config.numHeads(), config.numKvHeads(), config.headDim(), config.hiddenDim(),
                    config.routing().jsonName(), config.sparsityK());
            System.out.printf(Locale.ROOT, "x       %s%n", x);
            for (String name : block.paramNames()) {
                System.out.printf(Locale.ROOT, "param   %-16s %s%n", name, Arrays.toString(block.paramShape(name)));
            }

            ForwardOptions inference = ForwardOptions.inference();
            ForwardOptions training = ForwardOptions.training(seed, 0, 0);
            float[] aux = new float[2];
            double inferMs = bestOf3(() -> aux[0] = block.forward(x, out, inference), ctx);
            double trainMs = bestOf3(() -> {
                aux[1] = block.forward(x, out, training);
                block.backward(dOut, 1.0f, dX);
            }, ctx);
            RouteResult routed = block.route(x, null, inference);
            float[] o = out.toFloatArray();
            System.out.printf(Locale.ROOT, "out     %s  mean|out| %.4f%n", out, meanAbs(o));
            System.out.printf(Locale.ROOT, "forward (inference)          %9.3f ms  aux %.6f%n", inferMs, aux[0]);
            System.out.printf(Locale.ROOT, "forward+backward (training)  %9.3f ms  aux %.6f%n", trainMs, aux[1]);
            System.out.printf(Locale.ROOT, "routed fraction %.4f (counts %s of S=%d, target rho %s)%n",
                    routed.routedFraction(), Arrays.toString(routed.counts()), seq, config.sparsityK());
            System.out.printf(Locale.ROOT, "mean|d_x| %.6f%n", meanAbs(dX.toFloatArray()));
        }
        System.out.printf(Locale.ROOT, "live after close: %s%n", Hspmn.allocStats());
    }

    /** One warm-up, then the best of three, with the device drained before each clock stop. */
    private static double bestOf3(Runnable r, Context ctx) {
        r.run();
        ctx.synchronize();
        double best = Double.MAX_VALUE;
        for (int i = 0; i < 3; i++) {
            long t0 = System.nanoTime();
            r.run();
            ctx.synchronize();
            best = Math.min(best, (System.nanoTime() - t0) / 1e6);
        }
        return best;
    }

    private static float[] gaussian(SplittableRandom rnd, long n) {
        float[] v = new float[Math.toIntExact(n)];
        for (int i = 0; i < v.length; i++) {
            v[i] = (float) rnd.nextGaussian();
        }
        return v;
    }

    private static double meanAbs(float[] v) {
        double s = 0;
        for (float f : v) {
            s += Math.abs(f);
        }
        return s / Math.max(1, v.length);
    }
}
