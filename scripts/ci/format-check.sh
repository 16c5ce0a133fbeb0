#!/usr/bin/env bash
# The formatting is the formatters' (applied with `npm run format`): Prettier for TypeScript and
# JavaScript (.prettierrc, .prettierignore), clang-format for native/ (.clang-format; Debian's clang-format).
#   bash scripts/ci/format-check.sh        (exit 1 and the files named when one is not formatted)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
npx --no-install prettier --check . --log-level warn
if command -v clang-format >/dev/null; then
  git ls-files 'native/*.cpp' 'native/*.h' | xargs clang-format --dry-run -Werror
  echo "format-check: Prettier and clang-format agree with every file"
else
  echo "format-check: Prettier agrees with every file; clang-format is not installed (apt-get install clang-format), native/ not checked"
fi
