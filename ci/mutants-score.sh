#!/usr/bin/env bash
# The reviewed mutation score (issue #16): per file, the mutants cargo-mutants
# caught, missed, timed out on and could not build, and how many of the
# missed ones `mutants-allowed.md` accounts for (a missed mutant is allowed
# when its exact name, as `cargo mutants --list` prints it, appears there in
# backticks with its reason).
#
#   ci/mutants-score.sh [mutants.out ...]    default: mutants.out
#
# Exits 1 when a missed mutant is neither caught nor allowed, or when the
# caught share of the viable mutants is below 90%; prints those mutants.
set -euo pipefail
cd "$(dirname "$0")/.."

dirs=("$@")
[ ${#dirs[@]} -gt 0 ] || dirs=(mutants.out)
for dir in "${dirs[@]}"; do
    if [ ! -f "$dir/caught.txt" ]; then
        echo "mutants-score: $dir holds no cargo-mutants results (no caught.txt)" >&2
        exit 64
    fi
done

allowed=$(grep -o '`[^`]*: [^`]*`' mutants-allowed.md | tr -d '`' | sort -u)
outcomes=$(
    for dir in "${dirs[@]}"; do
        for kind in caught missed timeout unviable; do
            [ -f "$dir/$kind.txt" ] || continue
            sed "s/^/$kind\t/" "$dir/$kind.txt"
        done
    done | sort -u -t$'\t' -k2
)

printf '%s\n' "$outcomes" | awk -F'\t' -v allowed="$allowed" '
BEGIN {
    n = split(allowed, names, "\n")
    for (i = 1; i <= n; i++) if (names[i] != "") is_allowed[names[i]] = 1
}
$0 == "" { next }
{
    kind = $1; name = $2
    file = name; sub(/:[0-9]+:[0-9]+: .*/, "", file)
    files[file] = 1
    count[file, kind]++
    if (kind == "missed") {
        if (name in is_allowed) count[file, "allowed"]++
        else unexplained[++u] = name
    }
}
END {
    printf "%-44s %6s %6s %7s %6s %7s %6s %7s\n", "file", "caught", "missed", "timeout", "unviab", "allowed", "score", "review"
    for (file in files) order[++f] = file
    for (i = 1; i <= f; i++) for (j = i + 1; j <= f; j++) if (order[j] < order[i]) { t = order[i]; order[i] = order[j]; order[j] = t }
    for (i = 1; i <= f; i++) {
        file = order[i]
        caught = count[file, "caught"] + count[file, "timeout"]
        viable = caught + count[file, "missed"]
        reviewed = caught + count[file, "allowed"]
        total_caught += caught; total_viable += viable; total_reviewed += reviewed
        printf "%-44s %6d %6d %7d %6d %7d %5.1f%% %6.1f%%\n", file, count[file, "caught"], count[file, "missed"], count[file, "timeout"], count[file, "unviable"], count[file, "allowed"], viable ? 100 * caught / viable : 100, viable ? 100 * reviewed / viable : 100
    }
    score = total_viable ? 100 * total_caught / total_viable : 100
    printf "%-44s %6s %6s %7s %6s %7s %5.1f%% %6.1f%%\n", "all (timeouts count as caught)", "", "", "", "", "", score, total_viable ? 100 * total_reviewed / total_viable : 100
    for (i = 1; i <= u; i++) print "missed, not in mutants-allowed.md: " unexplained[i]
    if (u > 0 || score < 90) exit 1
}'
