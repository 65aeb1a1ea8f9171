#!/bin/sh
# fetch-debian-kernel.sh SUITE DIR: unpack the newest linux-image-*-amd64 of
# Debian SUITE (e.g. bullseye) into DIR/boot and DIR/lib/modules, with a
# modules.dep, for the kernel matrix. The machine's apt sources stay as they
# are: apt reads a private sources list and keeps its lists in DIR/.apt, and
# the package is unpacked, never installed. The mirror is the one the
# machine's apt already uses for its own release (and its -security suite).
# Quick and quiet when DIR already holds a kernel.
set -eu
suite=$1
dir=$2

if ls "$dir"/boot/vmlinuz-* >/dev/null 2>&1 && ls "$dir"/lib/modules/*/modules.dep >/dev/null 2>&1; then
	exit 0
fi

. /etc/os-release
host=${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release}
# "URI suite" of every binary source apt has configured.
repos=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Created-By: Packages' | sort -u)
archive=$(echo "$repos" | awk -v s="$host" '$2 == s { print $1; exit }')
security=$(echo "$repos" | awk -v s="$host-security" '$2 == s { print $1; exit }')
if [ -z "$archive" ]; then
	echo "fetch-debian-kernel: apt has no source for Debian $host to take the mirror from" >&2
	exit 1
fi

apt=$dir/.apt
rm -rf "$apt"
mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/sources.list.d" "$apt/preferences.d" "$apt/deb"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
{
	echo "deb [signed-by=$keyring] $archive $suite main"
	if [ -n "$security" ]; then echo "deb [signed-by=$keyring] $security $suite-security main"; fi
} >"$apt/sources.list"
: >"$apt/status"
# apt-get or apt-cache ($1) on the private lists only.
apt_private() {
	cmd=$1
	shift
	"$cmd" -q -o Dir::Etc::sourcelist="$apt/sources.list" -o Dir::Etc::sourceparts="$apt/sources.list.d" \
		-o Dir::Etc::preferencesparts="$apt/preferences.d" -o Dir::State::Lists="$apt/lists" \
		-o Dir::State::status="$apt/status" -o Dir::Cache="$apt/cache" \
		-o APT::Architectures::=amd64 -o Acquire::Languages=none -o APT::Sandbox::User=root "$@"
}
echo "fetch-debian-kernel: fetching the $suite kernel into $dir"
apt_private apt-get -qq update
# linux-image-amd64 depends on the suite's current linux-image-<abi>-amd64.
image=$(apt_private apt-cache depends linux-image-amd64 |
	awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9].*-amd64$/ { print $2; exit }')
if [ -z "$image" ]; then
	echo "fetch-debian-kernel: no linux-image-amd64 in Debian $suite" >&2
	exit 1
fi
(cd "$apt/deb" && apt_private apt-get -qq download "$image")
tmp=$dir/.unpack
rm -rf "$tmp"
dpkg-deb -x "$apt"/deb/"$image"_*.deb "$tmp"
release=${image#linux-image-}
depmod -b "$tmp" "$release"
mkdir -p "$dir/boot" "$dir/lib/modules"
rm -rf "$dir/lib/modules/$release"
mv "$tmp/lib/modules/$release" "$dir/lib/modules/"
# The kernel last: its presence says the tree is complete.
mv "$tmp/boot/config-$release" "$dir/boot/"
mv "$tmp/boot/vmlinuz-$release" "$dir/boot/"
rm -rf "$tmp" "$apt"
echo "fetch-debian-kernel: $image unpacked into $dir"
