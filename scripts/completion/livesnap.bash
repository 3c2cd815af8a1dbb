# SPDX-License-Identifier: MIT
# bash completion for livesnap. The commands and their options are read
# from `livesnap help` and `livesnap help CMD`, so they never go stale.

_livesnap_commands()
{
	"$1" help 2>/dev/null |
		sed -n '/^Commands:/,/^$/s/^  \([a-z][a-z-]*\) .*/\1/p'
}

_livesnap_options()
{
	"$1" help "$2" 2>/dev/null |
		grep -oE '^  (-[a-zA-Z], )?--[a-z][a-z-]*|^      --[a-z][a-z-]*' |
		grep -oE -- '--[a-z][a-z-]*'
}

_livesnap()
{
	local cur prev cmd i
	COMPREPLY=()
	cur=${COMP_WORDS[COMP_CWORD]}
	prev=${COMP_WORDS[COMP_CWORD - 1]}
	cmd=
	for ((i = 1; i < COMP_CWORD; i++)); do
		case ${COMP_WORDS[i]} in
		-*) ;;
		*) cmd=${COMP_WORDS[i]}; break ;;
		esac
	done

	if [ -z "$cmd" ]; then
		COMPREPLY=($(compgen -W "$(_livesnap_commands "${COMP_WORDS[0]}") --help --version" -- "$cur"))
		return
	fi
	if [ "$cmd" = help ]; then
		COMPREPLY=($(compgen -W "$(_livesnap_commands "${COMP_WORDS[0]}")" -- "$cur"))
		return
	fi
	case $prev in
	--accel) COMPREPLY=($(compgen -W "auto kvm tcg" -- "$cur")); return ;;
	--strategy | -S) COMPREPLY=($(compgen -W "auto copy write-first" -- "$cur")); return ;;
	--restore-mode) COMPREPLY=($(compgen -W "eager lazy" -- "$cur")); return ;;
	--mem-backend) COMPREPLY=($(compgen -W "anon memfd hugetlb" -- "$cur")); return ;;
	--feature | -f)
		COMPREPLY=($(compgen -W "userfaultfd wp-anon wp-shmem wp-hugetlbfs wp-unpopulated wp-async pagemap-scan missing-shmem missing-hugetlbfs discard-events thp hugetlb-pool kvm tcg" -- "$cur"))
		return ;;
	esac
	if [[ $cur == -* ]]; then
		COMPREPLY=($(compgen -W "$(_livesnap_options "${COMP_WORDS[0]}" "$cmd")" -- "$cur"))
		return
	fi
	COMPREPLY=($(compgen -f -- "$cur"))
}
complete -o filenames -F _livesnap livesnap
