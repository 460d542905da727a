#!/usr/bin/env bash
# Prints docs/cli.md: every longnet command's --help text (run after a Release build).
set -euo pipefail
cd "$(dirname "$0")/.."
cli=(dotnet src/LongNet.Cli/bin/Release/net10.0/LongNet.Cli.dll)
echo "# CLI reference"
echo
echo 'Every `longnet` command with its `--help` text, exactly as the command prints it (a test,'
echo '[`the CLI reference shows every command'"'"'s current help text`], fails when they drift apart).'
echo 'Run it as `dotnet run -c Release --project src/LongNet.Cli -- <command> …`, or install the packed tool.'
echo 'Regenerate this page after changing a help text: `bash docs/cli.sh > docs/cli.md` (after a Release build).'
echo
echo '```text'
"${cli[@]}" --help
echo '```'
for cmd in $("${cli[@]}" --help | sed -n '/^commands:/,/^$/p' | tail -n +2 | awk '{print $1}'); do
  printf '\n## `%s`\n\n```text\n' "$cmd"
  "${cli[@]}" "$cmd" --help
  echo '```'
done
