package io.hspmn;

import java.util.Locale;

/** {@code hspmn_routing}; the JSON spelling is the lower-case name ("topk", "threshold"). */
public enum Routing implements NativeEnum {
    TOPK,
    THRESHOLD;

    public String jsonName() {
        return name().toLowerCase(Locale.ROOT);
    }

    public static Routing of(int code) {
        return NativeEnum.of(Routing.class, code, "hspmn_routing");
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
