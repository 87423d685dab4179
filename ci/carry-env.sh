# Sourced by the GPU scripts that run Java on a machine without a JDK (ci/gpu-java.sh, ci/gpu-train.sh,
# ci/gpu-serve.sh, ci/quality.sh), from the repository root: unpacks ci/pack-carry.sh's .carry/ into a
# temporary folder, removed when the calling script exits (this sets its EXIT trap), and sets
#   CARRY_WORK  that folder (java/test-classes and java/benchmarks.jar are there too)
#   CARRY_JAVA  the carried runtime's java
#   CARRY_CP    the class path of the library and the applications: their classes and lib/ (Gson)
# Without .carry/jre.tgz and .carry/java.tgz it says so and exits the calling script with status 2.
#   usage: source ci/carry-env.sh
if [[ ! -f .carry/jre.tgz || ! -f .carry/java.tgz ]]; then
  echo "no .carry/jre.tgz or .carry/java.tgz: run ci/pack-carry.sh on the development machine and carry .carry" >&2
  exit 2
fi
CARRY_WORK=$(mktemp -d)
trap 'rm -rf "$CARRY_WORK"' EXIT
tar -xzf .carry/jre.tgz -C "$CARRY_WORK"
mkdir -p "$CARRY_WORK/java" && tar -xzf .carry/java.tgz -C "$CARRY_WORK/java"
CARRY_JAVA="$CARRY_WORK/.jre/bin/java"
CARRY_CP="$CARRY_WORK/java/classes:$(ls "$CARRY_WORK"/java/lib/*.jar | tr '\n' ':')"
CARRY_CP=${CARRY_CP%:}
