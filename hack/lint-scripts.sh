#!/usr/bin/env bash
# Lints what ruff cannot see: every shell script in hack/ and .ci/ with shellcheck, and the GitHub Actions
# workflows with actionlint (built from its Go module; it shellchecks each workflow's `run:` steps too).
# Part of `make test`. Installs shellcheck from Debian's packages when it is missing and we are root.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v shellcheck >/dev/null; then
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
    echo "lint-scripts: shellcheck is missing; install it (Debian/Ubuntu: apt-get install shellcheck)" >&2
    exit 1
  fi
  echo "lint-scripts: installing shellcheck (Debian package)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends shellcheck >/dev/null
fi

scripts=()
while IFS= read -r -d '' file; do
  if head -n 1 "$file" | grep -Eq '^#!.*[/ ](ba)?sh$'; then
    scripts+=("$file")
  fi
done < <(find hack .ci -type f -not -path '*/__pycache__/*' -not -path 'hack/.run/*' -print0 | sort -z)
if [[ ${#scripts[@]} -eq 0 ]]; then
  echo "lint-scripts: found no shell scripts in hack/ or .ci/" >&2
  exit 1
fi
shellcheck "${scripts[@]}"
echo "shellcheck: ${#scripts[@]} scripts clean (${scripts[*]})"

workflows=(.github/workflows/*.yml)
[[ -e ${workflows[0]} ]] || { echo "lint-scripts: no workflows in .github/workflows" >&2; exit 1; }
actionlint=$(bash hack/build-actionlint.sh)
"$actionlint" -no-color -shellcheck "$(command -v shellcheck)" "${workflows[@]}"
echo "actionlint: ${#workflows[@]} workflows clean (${workflows[*]})"
