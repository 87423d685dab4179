#!/usr/bin/env bash
# Sourced by the other scripts: selects a JDK of version 22 or later (the FFM API is final in 22)
# and exports JAVA_HOME and PATH for it. Order: $JAVA_HOME, the `java` on PATH, the JDKs in the
# usual install folders (newest first). Maven itself may run on it; the compiler uses --release 22.

hspmn_java_major() { # prints the major version of the JDK at $1, or nothing
  [[ -x $1/bin/java && -x $1/bin/javac ]] || return 0
  "$1/bin/java" -XshowSettings:properties -version 2>&1 |
    sed -n 's/^ *java\.specification\.version = //p' | cut -d. -f1
}

hspmn_select_jdk() {
  local cand=() d v
  [[ -n ${JAVA_HOME:-} ]] && cand+=("$JAVA_HOME")
  if command -v java >/dev/null 2>&1; then
    cand+=("$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")")
  fi
  for d in $(ls -d /usr/lib/jvm/* /usr/local/lib/jvm/* /opt/java/* /opt/jdk* "$HOME"/.sdkman/candidates/java/* \
             "$HOME"/.jdks/* 2>/dev/null | sort -rV); do cand+=("$d"); done
  for d in "${cand[@]}"; do
    v=$(hspmn_java_major "$d")
    if [[ -n $v && $v -ge 22 ]]; then
      export JAVA_HOME=$d PATH=$d/bin:$PATH
      return 0
    fi
  done
  echo "error: no JDK 22 or later found (looked at JAVA_HOME, the java on PATH and /usr/lib/jvm)." >&2
  echo "       HSPMN uses the Foreign Function & Memory API (final in Java 22): install a JDK 22+" >&2
  echo "       (e.g. Temurin 25) and set JAVA_HOME to it." >&2
  return 1
}

hspmn_select_jdk
