#!/usr/bin/env bash
# Executes the notebooks in notebooks/ headless with a Java kernel (rapaio-jupyter-kernel, JShell)
# whose classpath is this checkout's build; exits non-zero if any cell of any notebook fails.
#
#   notebooks/run-notebooks.sh                    run every notebook into a temporary directory
#                                                 (the committed notebooks are left untouched)
#   notebooks/run-notebooks.sh --inplace [NB...]  run and write the outputs back into the notebooks
#   notebooks/run-notebooks.sh --install-kernel   only install what is missing and register the
#                                                 "Java (djl-megatron)" kernel for Jupyter/JupyterLab
#
# Build the project first (mvn -q install -DskipTests). Installs what is missing: Debian's
# jupyter-nbconvert, python3-nbclient and jupyter-client (apt, as root or through sudo), and from Maven
# Central the kernel jar io.github.padreati:rapaio-jupyter-kernel and the plotting library
# org.knowm.xchart:xchart that the notebooks draw with (into ~/.cache/djl-megatron/jupyter; XChart is
# on the kernel's classpath only, never a dependency of the project's modules). The kernel runs with
# notebooks/kernel-fix/LoopThread.java (compiled here) ahead of its jar: 3.0.1's start-up races fixed.
# Environment: NOTEBOOK_TIMEOUT (seconds per cell, default 600), DJLM_KERNEL_HOME, DJLM_KERNEL_JAVA_OPTS,
# DJLM_KEEP_WORK=1 (keep the run's directory: nbconvert's and the kernel's logs, the executed notebooks).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NB_DIR="$ROOT/notebooks"
KERNEL_NAME="djl-megatron"
KERNEL_HOME="${DJLM_KERNEL_HOME:-$HOME/.cache/djl-megatron/jupyter}"
KERNEL_ARTIFACT="io.github.padreati:rapaio-jupyter-kernel:3.0.1"
KERNEL_JAR="$KERNEL_HOME/rapaio-jupyter-kernel-3.0.1.jar"
XCHART_ARTIFACT="org.knowm.xchart:xchart:4.0.3" # PNG export needs no other jar (its other encoders are optional)
XCHART_JAR="$KERNEL_HOME/xchart-4.0.3.jar"
JAR="$ROOT/examples/target/djl-megatron-examples-0.1.0-SNAPSHOT.jar"
CP_FILE="$ROOT/examples/target/classpath.txt"
TIMEOUT="${NOTEBOOK_TIMEOUT:-600}"

mode=run
notebooks=()
for arg in "$@"; do
  case "$arg" in
    --inplace) mode=inplace ;;
    --install-kernel) mode=install ;;
    -h|--help) sed -n '2,/^set /p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "run-notebooks: unknown option $arg" >&2; exit 2 ;;
    *)
      [[ -f "$arg" ]] || { echo "run-notebooks: no such notebook: $arg" >&2; exit 2; }
      notebooks+=("$(cd "$(dirname "$arg")" && pwd)/$(basename "$arg")") ;;
  esac
done
if [[ ${#notebooks[@]} -eq 0 ]]; then
  notebooks=("$NB_DIR"/[0-9]*.ipynb)
fi

log() { echo "run-notebooks: $*"; }

if [[ ! -f "$JAR" || ! -f "$CP_FILE" ]]; then
  echo "run-notebooks: the project is not built; run: (cd $ROOT && mvn -q install -DskipTests)" >&2
  exit 2
fi

# --- 1. Jupyter's executor (Debian packages). Debian's tools run on /usr/bin/python3, whatever
#        python3 comes first on the PATH.
PY=/usr/bin/python3
have_jupyter() {
  [[ -x /usr/bin/jupyter-nbconvert ]] && "$PY" -c 'import nbconvert, nbclient, jupyter_client' 2>/dev/null
}
if ! have_jupyter; then
  packages=(jupyter-nbconvert python3-nbclient jupyter-client python3-ipykernel fontconfig fonts-dejavu-core)
  SUDO=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "run-notebooks: need root (or sudo) to apt-get install ${packages[*]}" >&2; exit 2; }
    SUDO=(sudo)
  fi
  log "installing ${packages[*]} (apt)"
  export DEBIAN_FRONTEND=noninteractive
  for attempt in 1 2 3; do
    if "${SUDO[@]}" apt-get update -qq && "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null; then
      break
    fi
    [[ $attempt -eq 3 ]] && { echo "run-notebooks: apt-get install failed 3 times" >&2; exit 2; }
    log "apt-get failed (attempt $attempt); retrying in 10 s"
    sleep 10
  done
  have_jupyter || { echo "run-notebooks: jupyter-nbconvert still unusable after installing" >&2; exit 2; }
fi

# --- 2. The kernel jar and XChart (Maven Central).
fetch_jar() { # $1: groupId:artifactId:version, $2: the jar it gives in $KERNEL_HOME
  [[ -f "$2" ]] && return 0
  log "fetching $1 (Maven Central)"
  mkdir -p "$KERNEL_HOME"
  if ! mvn -q -B -ntp dependency:copy -Dartifact="$1" -DoutputDirectory="$KERNEL_HOME" >"$KERNEL_HOME/fetch.log" 2>&1 \
      || [[ ! -f "$2" ]]; then
    cat "$KERNEL_HOME/fetch.log" >&2
    echo "run-notebooks: could not fetch $1" >&2
    exit 2
  fi
}
fetch_jar "$KERNEL_ARTIFACT" "$KERNEL_JAR"
fetch_jar "$XCHART_ARTIFACT" "$XCHART_JAR"

# The kernel's start-up race fixed (notebooks/kernel-fix/LoopThread.java says what and why): the
# fixed class, compiled once, goes ahead of the kernel jar on its classpath.
FIX_SRC="$NB_DIR/kernel-fix/LoopThread.java"
FIX_DIR="$KERNEL_HOME/rapaio-jupyter-kernel-3.0.1-fix"
FIX_CLASS="$FIX_DIR/org/rapaio/jupyter/kernel/channels/LoopThread.class"
if [[ ! -f "$FIX_CLASS" || "$FIX_SRC" -nt "$FIX_CLASS" ]]; then
  mkdir -p "$FIX_DIR"
  javac -nowarn --release 17 -cp "$KERNEL_JAR" -d "$FIX_DIR" "$FIX_SRC" \
    || { echo "run-notebooks: could not compile $FIX_SRC" >&2; exit 2; }
fi

# --- 3. The kernel spec: rapaio's kernel reads RJK_CLASSPATH (';'-separated) and adds it to JShell.
write_kernel_spec() { # $1: a Jupyter data directory
  local dir="$1/kernels/$KERNEL_NAME"
  mkdir -p "$dir"
  "$PY" - "$dir/kernel.json" "$FIX_DIR:$KERNEL_JAR" "$JAR:$(cat "$CP_FILE"):$XCHART_JAR" "${DJLM_KERNEL_JAVA_OPTS:--Xmx6g}" <<'EOF'
import json, sys
spec_file, kernel_classpath, classpath, java_opts = sys.argv[1:5]
argv = ["java"] + java_opts.split() + ["-Dai.djl.offline=true", "-Djava.awt.headless=true",
                                       "-cp", kernel_classpath, "org.rapaio.jupyter.kernel.MainApp",
                                       "{connection_file}"]
spec = {"argv": argv, "display_name": "Java (djl-megatron)", "language": "java",
        "interrupt_mode": "message",
        "env": {"RJK_CLASSPATH": ";".join(p for p in classpath.split(":") if p)}}
with open(spec_file, "w") as f:
    json.dump(spec, f, indent=1)
EOF
  echo "$dir"
}

if [[ $mode == install ]]; then
  data_dir="$(jupyter --data-dir 2>/dev/null || echo "$HOME/.local/share/jupyter")"
  log "kernel \"Java (djl-megatron)\" installed: $(write_kernel_spec "$data_dir")/kernel.json"
  exit 0
fi

# --- 4. Execute. A private kernel spec, so a checkout's run never changes the user's kernels.
work="$(mktemp -d "${TMPDIR:-/tmp}/djlm-notebooks.XXXXXX")"
if [[ -n "${DJLM_KEEP_WORK:-}" ]]; then
  trap 'log "kept $work"' EXIT
else
  trap 'rm -rf "$work"' EXIT
fi
write_kernel_spec "$work/jupyter" >/dev/null
export JUPYTER_PATH="$work/jupyter${JUPYTER_PATH:+:$JUPYTER_PATH}"

passed=0
failed=0
start_all=$SECONDS
for nb in "${notebooks[@]}"; do
  name="$(basename "$nb")"
  # record_timing off: no execution timestamps in the cells' metadata (committed notebooks diff cleanly)
  args=(--to notebook --execute "--ExecutePreprocessor.timeout=$TIMEOUT" "--ExecutePreprocessor.kernel_name=$KERNEL_NAME"
        --ExecutePreprocessor.record_timing=False)
  if [[ $mode == inplace ]]; then
    args+=(--inplace)
  else
    args+=(--output-dir "$work/out")
  fi
  t0=$SECONDS
  if /usr/bin/jupyter-nbconvert "${args[@]}" "$nb" >"$work/$name.log" 2>&1; then
    passed=$((passed + 1))
    log "$name passed ($((SECONDS - t0)) s)"
  else
    failed=$((failed + 1))
    log "$name FAILED ($((SECONDS - t0)) s):"
    # nbclient's error shows the failing cell and the exception, without the kernel's colours (the
    # Python traceback before it is left out); any other failure: the end of the log, less the
    # kernel's own INFO chatter
    if grep -q 'CellExecutionError:' "$work/$name.log"; then
      sed -n '/CellExecutionError:/,$p' "$work/$name.log" | sed 's/\x1b\[[0-9;]*m//g' | head -n 80 >&2
    else
      grep -v -E '^\[[0-9-]+ [0-9:]+\] \[(INFO|FINE)' "$work/$name.log" | tail -n 60 >&2 || true
    fi
  fi
done
log "$((SECONDS - start_all)) s in all"
echo "notebooks: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
