#!/usr/bin/env bash
# Build the core's libFuzzer harnesses (clang, ASan + UBSan), replay each seed corpus as a regression test, then
# fuzz each harness for SECONDS (0: replay only). New inputs go to OUT/corpus/<harness>, never into the repository;
# a crash stops the script with libFuzzer's report and leaves its input as OUT/crash-<harness>-*.
#   usage: runtime/native/fuzz/fuzz.sh OUT [SECONDS] [HARNESS...]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
native="$(dirname "$here")"
out="$(mkdir -p "$1" && cd "$1" && pwd)"
seconds="${2:-0}"
shift $(( $# >= 2 ? 2 : $# ))
harnesses=("$@")
[ ${#harnesses[@]} -gt 0 ] || harnesses=(image pixels manifest labels csv)

read -r tvm ffi < <(python3 -c "import importlib.util as u; print(*(next(iter(u.find_spec(p).submodule_search_locations)) for p in ('tvm', 'tvm_ffi')))")
flags=(-std=c++17 -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
       -I"$native" -I"$tvm/include" -I"$ffi/include")
libs=(-L"$tvm/lib" -L"$ffi/lib" -Wl,-rpath,"$tvm/lib" -Wl,-rpath,"$ffi/lib")
# harness: the core's sources it links, then (after "|") the libraries
declare -A build=(
  [image]="image.cc | -ljpeg -lpng16 -lz"
  [pixels]="edgevit.cc image.cc manifest.cc trust.cc files.cc cpu_features.cc | -ltvm_runtime -ltvm_ffi -ljpeg -lpng16 -lz -lsodium"
  [manifest]="manifest.cc | -ltvm_ffi"
  [labels]="manifest.cc trust.cc files.cc | -ltvm_ffi -lsodium"
  [csv]="csv.cc |"
)
for name in "${harnesses[@]}"; do
  binary="$out/${name}_fuzzer"
  sources="${build[$name]%|*}" needs="${build[$name]#*|}"
  # shellcheck disable=SC2086
  clang++ "${flags[@]}" "$here/${name}_fuzzer.cc" $(printf "$native/%s " $sources) "${libs[@]}" $needs -o "$binary"
  seeds="$here/corpus/$name"
  echo "== $name: replaying $(ls "$seeds" | wc -l) corpus inputs"
  "$binary" -runs=0 "$seeds" 2>&1 | grep -E "INITED|DONE|ERROR|SUMMARY" | tail -n 2
  if [ "$seconds" -gt 0 ]; then
    mkdir -p "$out/corpus/$name"
    echo "== $name: fuzzing for ${seconds}s"
    "$binary" -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$out/crash-$name-" \
      "$out/corpus/$name" "$seeds" 2>&1 | grep -E "^(#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb|==[0-9]+==ERROR|SUMMARY)" || true
    if ls "$out"/crash-"$name"-* >/dev/null 2>&1; then
      echo "== $name: crash input(s): $(ls "$out"/crash-"$name"-*)"
      exit 1
    fi
  fi
done
