# bash completion for tracepkt-perf(8), generated from its --help text by
# cmd/tracepkt-perf/manual_test.go (go test -update rewrites it).
_tracepkt_perf() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    case $prev in
        --record|--replay|--pcapng|--diff|--svg|--merge) COMPREPLY=($(compgen -f -- "$cur")); return ;;
        -M|--pmtudisc) COMPREPLY=($(compgen -W "do dont want" -- "$cur")); return ;;
        --netfilter) COMPREPLY=($(compgen -W "auto kprobe nftrace off" -- "$cur")); return ;;
        -c|--count|-i|--interval|-W|--timeout|-s|--size|-t|--ttl|-I|--interface|-m|--mark|--tcp|--udp|--payload|--from-netns|--netns|--attach|--id|--duration) return ;;
    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "--attach --check --count --demo --diff --duration --from-netns --help --id --interface --interval --json --listen --mark --merge --netfilter --netns --payload --pcapng --pmtudisc --record --replay --size --stats --svg --tcp --timeout --ttl --udp --verbose --version -4 -6 -I -M -W -c -h -i -m -s -t" -- "$cur"))
        return
    fi
    COMPREPLY=($(compgen -A hostname -- "$cur"))
}
complete -F _tracepkt_perf tracepkt-perf
