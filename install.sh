#!/usr/bin/env bash
# Builds infra from this checkout and installs it for you (no root needed):
#
#   ./install.sh                             build, then install under ~/.local
#   ./install.sh --prefix DIR                ... under DIR instead ($PREFIX too)
#   ./install.sh --uninstall [--prefix DIR]  remove exactly what it installed
#
# What goes where, under PREFIX (default ~/.local):
#   bin/infra                                   the binary (cargo build --release --locked)
#   bin/infra-credential                        kubectl's credential plugin (small, starts fast)
#   share/man/man1/infra*.1                     a man page per command (from man/)
#   share/bash-completion/completions/infra     bash completion (from completions/)
#   share/zsh/site-functions/_infra             zsh completion
#   share/fish/vendor_completions.d/infra.fish  fish completion
#   share/infra/install-manifest                what was installed, for --uninstall
#
# Running it again upgrades in place (files an older install had and this one
# doesn't are removed); --uninstall removes the files in the manifest and the
# directories the install created, if they are empty, and nothing else.
#
# Environment:
#   PREFIX                 the prefix when --prefix is not given
#   INFRA_INSTALL_BINARY   install this infra binary instead of building one
#                          (for packagers and the tests, which pass the binary
#                          cargo test built); infra-credential is taken from
#                          beside it
#   CARGO                  the cargo to build with (default: cargo on PATH)
#   CARGO_TARGET_DIR       where cargo builds (default: target/ here)
set -euo pipefail

say() { printf '%s\n' "$*" >&2; }
die() {
  printf 'install.sh: error: %s\n' "$*" >&2
  exit 1
}
usage() { sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"; }

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
prefix="${PREFIX:-}"
uninstall=
while (($#)); do
  case "$1" in
  --prefix)
    (($# >= 2)) || die "--prefix needs a directory"
    prefix="$2"
    shift 2
    ;;
  --prefix=*)
    prefix="${1#--prefix=}"
    shift
    ;;
  --uninstall)
    uninstall=1
    shift
    ;;
  -h | --help)
    usage
    exit 0
    ;;
  *) die "unknown argument '$1' (see ./install.sh --help)" ;;
  esac
done
if [[ -z "$prefix" ]]; then
  [[ -n "${HOME:-}" ]] || die "HOME is not set: give --prefix DIR"
  prefix="$HOME/.local"
fi
[[ "$prefix" == /* ]] || prefix="$PWD/$prefix"
prefix="${prefix%/}"
[[ -n "$prefix" ]] || die "refusing to use / as the prefix"

MANIFEST_REL=share/infra/install-manifest
manifest="$prefix/$MANIFEST_REL"

# The manifest holds one entry per line: "f PATH" for a file, "d PATH" for a
# directory the install created; PATH is relative to the prefix.
m_files=()
m_dirs=()
if [[ -f "$manifest" ]]; then
  while read -r kind path; do
    case "$path" in
    "" | /* | .. | ../* | */.. | */../*) die "$manifest: refusing the path '$path'" ;;
    esac
    case "$kind" in
    f) m_files+=("$path") ;;
    d) m_dirs+=("$path") ;;
    *) die "$manifest: unknown entry '$kind $path'" ;;
    esac
  done <"$manifest"
fi

remove_dirs() { # DIR... (relative, in creation order): rmdir the empty ones, deepest first
  local i d
  for ((i = $#; i >= 1; i--)); do
    d="${!i}"
    if [[ "$d" == . ]]; then d="$prefix"; else d="$prefix/$d"; fi
    if [[ -d "$d" ]]; then rmdir "$d" 2>/dev/null || true; fi
  done
}

if [[ -n "$uninstall" ]]; then
  if [[ ! -f "$manifest" ]]; then
    say "Nothing to uninstall: no infra install under $prefix (no $manifest)."
    exit 0
  fi
  removed=0
  for f in ${m_files[@]+"${m_files[@]}"}; do
    if [[ -e "$prefix/$f" || -L "$prefix/$f" ]]; then
      rm -f "$prefix/$f"
      removed=$((removed + 1))
    fi
  done
  rm -f "$manifest"
  remove_dirs ${m_dirs[@]+"${m_dirs[@]}"}
  say "Uninstalled infra from $prefix ($removed files)."
  exit 0
fi

# ---------------------------------------------------------------- the binary
if [[ -n "${INFRA_INSTALL_BINARY:-}" ]]; then
  binary="$INFRA_INSTALL_BINARY"
  [[ -x "$binary" ]] || die "INFRA_INSTALL_BINARY=$binary is not an executable file"
  say "Using $binary (INFRA_INSTALL_BINARY) instead of building."
else
  cargo="${CARGO:-cargo}"
  command -v "$cargo" >/dev/null ||
    die "cargo not found: install a Rust toolchain (https://rustup.rs), then run ./install.sh again"
  say "Building infra: cargo build --release --locked (a few minutes the first time)"
  (cd "$REPO" && "$cargo" build --release --locked)
  target="${CARGO_TARGET_DIR:-$REPO/target}"
  [[ "$target" == /* ]] || target="$REPO/$target"
  binary="$target/release/infra"
  [[ -x "$binary" ]] || die "cargo did not produce $binary"
fi
credential="$(dirname "$binary")/infra-credential"
[[ -x "$credential" ]] || die "$credential is missing: it is built with infra (cargo build --release)"
version="$("$binary" --version)" || die "$binary does not run"

for d in man completions; do
  [[ -d "$REPO/$d" ]] || die "$REPO/$d is missing: run install.sh from a full checkout of infra"
done

# ---------------------------------------------------------------- installing
# (Bash 3.2, macOS's, has no mapfile, and calls an empty "${a[@]}" unbound.)
created=(${m_dirs[@]+"${m_dirs[@]}"})
new_files=()

make_dir() { # REL: creates PREFIX/REL and its missing parents, remembering them
  local rel="$1" path="" part
  if [[ ! -d "$prefix" ]]; then
    mkdir -p "$prefix"
    created+=(.)
  fi
  local IFS=/
  for part in $rel; do
    path="${path:+$path/}$part"
    if [[ ! -d "$prefix/$path" ]]; then
      mkdir "$prefix/$path"
      created+=("$path")
    fi
  done
}

put() { # SOURCE MODE REL
  make_dir "$(dirname "$3")"
  # Through a temporary file and a rename, so a running infra is not
  # overwritten in place.
  local tmp="$prefix/$3.install-tmp"
  cp "$1" "$tmp"
  chmod "$2" "$tmp"
  mv -f "$tmp" "$prefix/$3"
  new_files+=("$3")
}

put "$binary" 0755 bin/infra
put "$credential" 0755 bin/infra-credential
man_pages=("$REPO"/man/*.1)
[[ -e "${man_pages[0]}" ]] || die "no man pages in $REPO/man"
for page in "${man_pages[@]}"; do
  put "$page" 0644 "share/man/man1/$(basename "$page")"
done
put "$REPO/completions/infra.bash" 0644 share/bash-completion/completions/infra
put "$REPO/completions/_infra" 0644 share/zsh/site-functions/_infra
put "$REPO/completions/infra.fish" 0644 share/fish/vendor_completions.d/infra.fish

# Files of an earlier install that this one no longer has (say, the man page
# of a command that went away).
for f in ${m_files[@]+"${m_files[@]}"}; do
  keep=
  for n in "${new_files[@]}"; do [[ "$n" == "$f" ]] && keep=1 && break; done
  [[ -n "$keep" ]] || rm -f "${prefix:?}/$f"
done

make_dir "$(dirname "$MANIFEST_REL")"
{
  for d in ${created[@]+"${created[@]}"}; do
    printf 'd %s\n' "$d"
  done | awk '!seen[$0]++'
  for f in "${new_files[@]}"; do printf 'f %s\n' "$f"; done
} >"$manifest.tmp"
mv -f "$manifest.tmp" "$manifest"

# ---------------------------------------------------------------- the report
bindir="$prefix/bin"
say ""
say "Installed $version:"
say "  $bindir/infra and $bindir/infra-credential (what kubectl runs for a credential)"
say "  $prefix/share/man/man1/ (${#man_pages[@]} man pages: man infra, man infra-login, ...)"
say "  completions for bash, zsh and fish under $prefix/share"
say "  (the list is in $manifest; ./install.sh --uninstall --prefix $prefix removes it all)"
case ":${PATH:-}:" in
*":$bindir:"* | *":$bindir/:"*)
  say ""
  say "$bindir is on your PATH: run 'infra --help', or 'infra server --dev' to try it."
  ;;
*)
  say ""
  say "$bindir is not on your PATH. Add it, then open a new terminal:"
  case "$(basename "${SHELL:-bash}")" in
  zsh) say "  echo 'export PATH=\"$bindir:\$PATH\"' >> ~/.zshrc" ;;
  fish) say "  fish_add_path $bindir" ;;
  *) say "  echo 'export PATH=\"$bindir:\$PATH\"' >> ~/.bashrc" ;;
  esac
  say "(man finds the pages once the bin directory is on PATH.)"
  ;;
esac
if [[ "$(basename "${SHELL:-}")" == zsh ]]; then
  say ""
  say "zsh completion: add $prefix/share/zsh/site-functions to fpath before compinit,"
  say "  e.g. in ~/.zshrc: fpath=($prefix/share/zsh/site-functions \$fpath)"
fi
