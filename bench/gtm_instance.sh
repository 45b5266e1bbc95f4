#!/usr/bin/env bash
# Creates a GT.M replicated instance (the benchmark peer) in DIR named NAME: global
# directory, database with before-image journaling and replication on, instance file.
# Usage: bench/gtm_instance.sh DIR NAME; then `source DIR/env` to use it.
set -euo pipefail
dir=$(realpath -m "$1"); name=$2
gtm_dist=$(ls -d /usr/lib/x86_64-linux-gnu/fis-gtm/V*_x86_64 2>/dev/null | sort | tail -n1)
[ -x "$gtm_dist/mumps" ] || { echo "GT.M not installed: apt-get install fis-gtm" >&2; exit 1; }
mkdir -p "$dir/obj"
cat > "$dir/env" <<ENV
export gtm_dist=$gtm_dist
export gtmgbldir=$dir/g.gld
export gtm_repl_instance=$dir/g.repl
export gtm_repl_instname=$name
export gtmroutines="$dir/obj($dir) $gtm_dist/libgtmutil.so"
export gtm_tmp=$dir
export gtm_log=$dir
ENV
# shellcheck disable=SC1091
source "$dir/env"
"$gtm_dist/mumps" -run GDE >/dev/null 2>&1 <<GDE
change -segment DEFAULT -allocation=100000
change -segment DEFAULT -extension_count=100000
change -segment DEFAULT -file_name=$dir/g.dat
exit
GDE
"$gtm_dist/mupip" create >/dev/null 2>&1
"$gtm_dist/mupip" set -replication=on -region DEFAULT >/dev/null 2>&1
"$gtm_dist/mupip" replicate -instance_create -noreplace -name="$name" >/dev/null 2>&1
echo "$dir"
