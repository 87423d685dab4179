package io.hspmn;

import java.util.Locale;

/** {@code hspmn_routing}; the JSON spelling is the lower-case name ("topk", "threshold"). */
public enum Routing {
    TOPK(0),
    THRESHOLD(1);

    private final int code;

    Routing(int code) {
        this.code = code;
    }

    public int code() {
        return code;
    }

    public String jsonName() {
        return name().toLowerCase(Locale.ROOT);
    }

    public static Routing of(int code) {
        for (Routing r : values()) {
            if (r.code == code) {
                return r;
            }
        }
        throw new IllegalArgumentException("unknown hspmn_routing " + code);
    }

    public static Routing parse(String name) {
        for (Routing r : values()) {
            if (r.jsonName().equals(name.trim().toLowerCase(Locale.ROOT))) {
                return r;
            }
        }
        throw new IllegalArgumentException("routing must be \"topk\" or \"threshold\", not \"" + name + "\"");
    }
}
