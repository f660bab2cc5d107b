# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_infra_global_optspecs
    string join \n h/help V/version
end

function __fish_infra_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_infra_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_infra_using_subcommand
    set -l cmd (__fish_infra_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c infra -n "__fish_infra_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c infra -n "__fish_infra_needs_command" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_needs_command" -f -a "login" -d 'Log in to an infra server'
complete -c infra -n "__fish_infra_needs_command" -f -a "logout" -d 'Log out: revoke the access key and forget it on this machine'
complete -c infra -n "__fish_infra_needs_command" -f -a "status" -d 'Show where you are logged in and whether each key still works'
complete -c infra -n "__fish_infra_needs_command" -f -a "whoami" -d 'Show whom you are logged in as, and your access to a destination'
complete -c infra -n "__fish_infra_needs_command" -f -a "list" -d 'List the clusters and namespaces you can reach, with your roles'
complete -c infra -n "__fish_infra_needs_command" -f -a "use" -d 'Switch kubectl to a cluster (or a namespace in it) you can reach'
complete -c infra -n "__fish_infra_needs_command" -f -a "users" -d 'Manage users (admins)'
complete -c infra -n "__fish_infra_needs_command" -f -a "groups" -d 'Manage groups and their members (admins)'
complete -c infra -n "__fish_infra_needs_command" -f -a "grants" -d 'Manage grants: who may do what where'
complete -c infra -n "__fish_infra_needs_command" -f -a "destinations" -d 'List and remove destinations (clusters)'
complete -c infra -n "__fish_infra_needs_command" -f -a "keys" -d 'Manage access keys'
complete -c infra -n "__fish_infra_needs_command" -f -a "providers" -d 'Manage identity providers (admins)'
complete -c infra -n "__fish_infra_needs_command" -f -a "audit" -d 'Show the audit log (admins)'
complete -c infra -n "__fish_infra_needs_command" -f -a "sessions" -d 'Recorded exec and attach sessions: list, play back, export'
complete -c infra -n "__fish_infra_needs_command" -f -a "identities" -d 'Manage machine identities and their OIDC JWT logins (admins)'
complete -c infra -n "__fish_infra_needs_command" -f -a "access" -d 'Explain access: who may do what where, and why'
complete -c infra -n "__fish_infra_needs_command" -f -a "tokens" -d 'Credentials for clusters: kubectl\'s exec plugin'
complete -c infra -n "__fish_infra_needs_command" -f -a "server" -d 'Run the infra API server'
complete -c infra -n "__fish_infra_needs_command" -f -a "connector" -d 'Run the connector next to a cluster\'s API server'
complete -c infra -n "__fish_infra_needs_command" -f -a "completion" -d 'Print the completion script for a shell'
complete -c infra -n "__fish_infra_needs_command" -f -a "version" -d 'Print the CLI\'s version and the server\'s'
complete -c infra -n "__fish_infra_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c infra -n "__fish_infra_using_subcommand login" -l key -d 'Log in with an access key (`-`: read it from standard input)' -r
complete -c infra -n "__fish_infra_using_subcommand login" -l access-key-file -d 'Log in with the access key in this file (`-`: standard input): kept out of `ps`' -r -F
complete -c infra -n "__fish_infra_using_subcommand login" -l user -d 'Log in as a local user (password prompted, or INFRA_PASSWORD)' -r
complete -c infra -n "__fish_infra_using_subcommand login" -l tls-trusted-fingerprint -d 'Trust the server\'s certificate with this SHA-256 fingerprint (or INFRA_TLS_TRUSTED_FINGERPRINT)' -r
complete -c infra -n "__fish_infra_using_subcommand login" -l tls-trusted-cert -d 'Trust the server\'s certificate (or its CA) from this PEM file (or INFRA_TLS_TRUSTED_CERT)' -r -F
complete -c infra -n "__fish_infra_using_subcommand login" -l provider -d 'Sign in with this identity provider (when the server has several)' -r
complete -c infra -n "__fish_infra_using_subcommand login" -l listen-port -d 'Local port for the provider\'s redirect (register http://localhost:PORT with it)' -r
complete -c infra -n "__fish_infra_using_subcommand login" -l timeout -d 'How long to wait for the browser sign-in' -r
complete -c infra -n "__fish_infra_using_subcommand login" -l method -d 'Log in another way: oidc-auth (a machine identity, with its workload\'s OIDC JWT)' -r -f -a "oidc-auth\t'A machine identity logs in with its workload\'s OIDC JWT'"
complete -c infra -n "__fish_infra_using_subcommand login" -l machine-identity-id -d 'With --method=oidc-auth: the machine identity\'s id or name' -r
complete -c infra -n "__fish_infra_using_subcommand login" -l oidc-jwt -d 'With --method=oidc-auth: the workload\'s OIDC JWT (or INFRA_OIDC_JWT)' -r
complete -c infra -n "__fish_infra_using_subcommand login" -l skip-tls-verify -d 'Do not verify the server\'s certificate (unsafe)'
complete -c infra -n "__fish_infra_using_subcommand login" -l no-browser -d 'Print the sign-in URL instead of opening a browser'
complete -c infra -n "__fish_infra_using_subcommand login" -l device -d 'Sign in on another device (a phone, a laptop) with a code: for machines without a browser'
complete -c infra -n "__fish_infra_using_subcommand login" -l reauth -d 'Ask the identity provider to authenticate you again, even if it still holds a session: for grants that ask for a recent sign-in (--max-auth-age)'
complete -c infra -n "__fish_infra_using_subcommand login" -l silent -d 'With --method=oidc-auth: print nothing on stderr when it works'
complete -c infra -n "__fish_infra_using_subcommand login" -l plain -d 'With --method=oidc-auth: print only the access token on stdout and keep it nowhere'
complete -c infra -n "__fish_infra_using_subcommand login" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c infra -n "__fish_infra_using_subcommand login" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_using_subcommand logout" -l all -d 'Log out of every server'
complete -c infra -n "__fish_infra_using_subcommand logout" -s h -l help -d 'Print help'
complete -c infra -n "__fish_infra_using_subcommand logout" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_using_subcommand status" -l server -d 'Server to use (default: the one you logged in to last)' -r
complete -c infra -n "__fish_infra_using_subcommand status" -l format -d 'Output format [default: table on a terminal, plain otherwise]' -r -f -a "table\t'An aligned table with a header, also into a pipe or file'
plain\t'Tab-separated lines without a header (the default off a terminal)'
json\t'JSON, for scripts'
yaml\t'YAML'"
complete -c infra -n "__fish_infra_using_subcommand status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c infra -n "__fish_infra_using_subcommand status" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_using_subcommand whoami" -l destination -d 'Explain your access to this destination (DEST or DEST.NAMESPACE)' -r
complete -c infra -n "__fish_infra_using_subcommand whoami" -l format -d 'Output format [default: table on a terminal, plain otherwise]' -r -f -a "table\t'An aligned table with a header, also into a pipe or file'
plain\t'Tab-separated lines without a header (the default off a terminal)'
json\t'JSON, for scripts'
yaml\t'YAML'"
complete -c infra -n "__fish_infra_using_subcommand whoami" -l server -d 'Server to use (default: the one you logged in to last)' -r
complete -c infra -n "__fish_infra_using_subcommand whoami" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c infra -n "__fish_infra_using_subcommand whoami" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_using_subcommand list" -l server -d 'Server to use (default: the one you logged in to last)' -r
complete -c infra -n "__fish_infra_using_subcommand list" -l format -d 'Output format [default: table on a terminal, plain otherwise]' -r -f -a "table\t'An aligned table with a header, also into a pipe or file'
plain\t'Tab-separated lines without a header (the default off a terminal)'
json\t'JSON, for scripts'
yaml\t'YAML'"
complete -c infra -n "__fish_infra_using_subcommand list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c infra -n "__fish_infra_using_subcommand list" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_using_subcommand use" -l server -d 'Server to use (default: the one you logged in to last)' -r
complete -c infra -n "__fish_infra_using_subcommand use" -s h -l help -d 'Print help'
complete -c infra -n "__fish_infra_using_subcommand use" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_using_subcommand users; and not __fish_seen_subcommand_from add list edit remove help" -s h -l help -d 'Print help'
complete -c infra -n "__fish_infra_using_subcommand users; and not __fish_seen_subcommand_from add list edit remove help" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_using_subcommand users; and not __fish_seen_subcommand_from add list edit remove help" -f -a "add" -d 'Add a user'
complete -c infra -n "__fish_infra_using_subcommand users; and not __fish_seen_subcommand_from add list edit remove help" -f -a "list" -d 'List users'
complete -c infra -n "__fish_infra_using_subcommand users; and not __fish_seen_subcommand_from add list edit remove help" -f -a "edit" -d 'Change a local user\'s password (yours: give the current one first)'
complete -c infra -n "__fish_infra_using_subcommand users; and not __fish_seen_subcommand_from add list edit remove help" -f -a "remove" -d 'Remove a user, with their grants and keys'
complete -c infra -n "__fish_infra_using_subcommand users; and not __fish_seen_subcommand_from add list edit remove help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c infra -n "__fish_infra_using_subcommand users; and __fish_seen_subcommand_from add" -l server -d 'Server to use (default: the one you logged in to last)' -r
complete -c infra -n "__fish_infra_using_subcommand users; and __fish_seen_subcommand_from add" -l password -d 'Set a password (prompted on a terminal, else one line of stdin)'
complete -c infra -n "__fish_infra_using_subcommand users; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help'
complete -c infra -n "__fish_infra_using_subcommand users; and __fish_seen_subcommand_from add" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_using_subcommand users; and __fish_seen_subcommand_from list" -l format -d 'Output format [default: table on a terminal, plain otherwise]' -r -f -a "table\t'An aligned table with a header, also into a pipe or file'
plain\t'Tab-separated lines without a header (the default off a terminal)'
json\t'JSON, for scripts'
yaml\t'YAML'"
complete -c infra -n "__fish_infra_using_subcommand users; and __fish_seen_subcommand_from list" -l server -d 'Server to use (default: the one you logged in to last)' -r
complete -c infra -n "__fish_infra_using_subcommand users; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c infra -n "__fish_infra_using_subcommand users; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_using_subcommand users; and __fish_seen_subcommand_from edit" -l server -d 'Server to use (default: the one you logged in to last)' -r
complete -c infra -n "__fish_infra_using_subcommand users; and __fish_seen_subcommand_from edit" -l password -d 'Set a new password (prompted on a terminal, else one line of stdin)'
complete -c infra -n "__fish_infra_using_subcommand users; and __fish_seen_subcommand_from edit" -s h -l help -d 'Print help'
complete -c infra -n "__fish_infra_using_subcommand users; and __fish_seen_subcommand_from edit" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_using_subcommand users; and __fish_seen_subcommand_from remove" -l server -d 'Server to use (default: the one you logged in to last)' -r
complete -c infra -n "__fish_infra_using_subcommand users; and __fish_seen_subcommand_from remove" -l force -d 'Succeed even if the user does not exist'
complete -c infra -n "__fish_infra_using_subcommand users; and __fish_seen_subcommand_from remove" -s h -l help -d 'Print help'
complete -c infra -n "__fish_infra_using_subcommand users; and __fish_seen_subcommand_from remove" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_using_subcommand users; and __fish_seen_subcommand_from help" -f -a "add" -d 'Add a user'
complete -c infra -n "__fish_infra_using_subcommand users; and __fish_seen_subcommand_from help" -f -a "list" -d 'List users'
complete -c infra -n "__fish_infra_using_subcommand users; and __fish_seen_subcommand_from help" -f -a "edit" -d 'Change a local user\'s password (yours: give the current one first)'
complete -c infra -n "__fish_infra_using_subcommand users; and __fish_seen_subcommand_from help" -f -a "remove" -d 'Remove a user, with their grants and keys'
complete -c infra -n "__fish_infra_using_subcommand users; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c infra -n "__fish_infra_using_subcommand groups; and not __fish_seen_subcommand_from add list remove adduser removeuser help" -s h -l help -d 'Print help'
complete -c infra -n "__fish_infra_using_subcommand groups; and not __fish_seen_subcommand_from add list remove adduser removeuser help" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_using_subcommand groups; and not __fish_seen_subcommand_from add list remove adduser removeuser help" -f -a "add" -d 'Add a group'
complete -c infra -n "__fish_infra_using_subcommand groups; and not __fish_seen_subcommand_from add list remove adduser removeuser help" -f -a "list" -d 'List groups'
complete -c infra -n "__fish_infra_using_subcommand groups; and not __fish_seen_subcommand_from add list remove adduser removeuser help" -f -a "remove" -d 'Remove a group and its grants'
complete -c infra -n "__fish_infra_using_subcommand groups; and not __fish_seen_subcommand_from add list remove adduser removeuser help" -f -a "adduser" -d 'Add a user to a group'
complete -c infra -n "__fish_infra_using_subcommand groups; and not __fish_seen_subcommand_from add list remove adduser removeuser help" -f -a "removeuser" -d 'Remove a user from a group'
complete -c infra -n "__fish_infra_using_subcommand groups; and not __fish_seen_subcommand_from add list remove adduser removeuser help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c infra -n "__fish_infra_using_subcommand groups; and __fish_seen_subcommand_from add" -l server -d 'Server to use (default: the one you logged in to last)' -r
complete -c infra -n "__fish_infra_using_subcommand groups; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help'
complete -c infra -n "__fish_infra_using_subcommand groups; and __fish_seen_subcommand_from add" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_using_subcommand groups; and __fish_seen_subcommand_from list" -l format -d 'Output format [default: table on a terminal, plain otherwise]' -r -f -a "table\t'An aligned table with a header, also into a pipe or file'
plain\t'Tab-separated lines without a header (the default off a terminal)'
json\t'JSON, for scripts'
yaml\t'YAML'"
complete -c infra -n "__fish_infra_using_subcommand groups; and __fish_seen_subcommand_from list" -l server -d 'Server to use (default: the one you logged in to last)' -r
complete -c infra -n "__fish_infra_using_subcommand groups; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c infra -n "__fish_infra_using_subcommand groups; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_using_subcommand groups; and __fish_seen_subcommand_from remove" -l server -d 'Server to use (default: the one you logged in to last)' -r
complete -c infra -n "__fish_infra_using_subcommand groups; and __fish_seen_subcommand_from remove" -l force -d 'Succeed even if the group does not exist'
complete -c infra -n "__fish_infra_using_subcommand groups; and __fish_seen_subcommand_from remove" -s h -l help -d 'Print help'
complete -c infra -n "__fish_infra_using_subcommand groups; and __fish_seen_subcommand_from remove" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_using_subcommand groups; and __fish_seen_subcommand_from adduser" -l server -d 'Server to use (default: the one you logged in to last)' -r
complete -c infra -n "__fish_infra_using_subcommand groups; and __fish_seen_subcommand_from adduser" -s h -l help -d 'Print help'
complete -c infra -n "__fish_infra_using_subcommand groups; and __fish_seen_subcommand_from adduser" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_using_subcommand groups; and __fish_seen_subcommand_from removeuser" -l server -d 'Server to use (default: the one you logged in to last)' -r
complete -c infra -n "__fish_infra_using_subcommand groups; and __fish_seen_subcommand_from removeuser" -l force -d 'Succeed even if the user or group does not exist'
complete -c infra -n "__fish_infra_using_subcommand groups; and __fish_seen_subcommand_from removeuser" -s h -l help -d 'Print help'
complete -c infra -n "__fish_infra_using_subcommand groups; and __fish_seen_subcommand_from removeuser" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_using_subcommand groups; and __fish_seen_subcommand_from help" -f -a "add" -d 'Add a group'
complete -c infra -n "__fish_infra_using_subcommand groups; and __fish_seen_subcommand_from help" -f -a "list" -d 'List groups'
complete -c infra -n "__fish_infra_using_subcommand groups; and __fish_seen_subcommand_from help" -f -a "remove" -d 'Remove a group and its grants'
complete -c infra -n "__fish_infra_using_subcommand groups; and __fish_seen_subcommand_from help" -f -a "adduser" -d 'Add a user to a group'
complete -c infra -n "__fish_infra_using_subcommand groups; and __fish_seen_subcommand_from help" -f -a "removeuser" -d 'Remove a user from a group'
complete -c infra -n "__fish_infra_using_subcommand groups; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c infra -n "__fish_infra_using_subcommand grants; and not __fish_seen_subcommand_from add list remove help" -s h -l help -d 'Print help'
complete -c infra -n "__fish_infra_using_subcommand grants; and not __fish_seen_subcommand_from add list remove help" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_using_subcommand grants; and not __fish_seen_subcommand_from add list remove help" -f -a "add" -d 'Grant a role on a destination (or a namespace in it)'
complete -c infra -n "__fish_infra_using_subcommand grants; and not __fish_seen_subcommand_from add list remove help" -f -a "list" -d 'List grants (yours, or everyone\'s for admins)'
complete -c infra -n "__fish_infra_using_subcommand grants; and not __fish_seen_subcommand_from add list remove help" -f -a "remove" -d 'Remove a grant'
complete -c infra -n "__fish_infra_using_subcommand grants; and not __fish_seen_subcommand_from add list remove help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c infra -n "__fish_infra_using_subcommand grants; and __fish_seen_subcommand_from add" -l user -d 'A user, by name' -r
complete -c infra -n "__fish_infra_using_subcommand grants; and __fish_seen_subcommand_from add" -l group -d 'A group, by name' -r
complete -c infra -n "__fish_infra_using_subcommand grants; and __fish_seen_subcommand_from add" -l identity -d 'A machine identity, by name' -r
complete -c infra -n "__fish_infra_using_subcommand grants; and __fish_seen_subcommand_from add" -l role -d 'The role, e.g. view, edit, admin, cluster-admin' -r
complete -c infra -n "__fish_infra_using_subcommand grants; and __fish_seen_subcommand_from add" -l max-auth-age -d 'Ask for a sign-in at the identity provider within this long (e.g. 15m, at most 24h) before issuing a cluster token under this grant; `infra login SERVER --reauth` signs in again' -r
complete -c infra -n "__fish_infra_using_subcommand grants; and __fish_seen_subcommand_from add" -l server -d 'Server to use (default: the one you logged in to last)' -r
complete -c infra -n "__fish_infra_using_subcommand grants; and __fish_seen_subcommand_from add" -l record-sessions -d 'Record exec and attach sessions under this grant (`infra sessions list`); a session that cannot be recorded is refused'
complete -c infra -n "__fish_infra_using_subcommand grants; and __fish_seen_subcommand_from add" -l force -d 'Succeed if the grant already exists'
complete -c infra -n "__fish_infra_using_subcommand grants; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help'
complete -c infra -n "__fish_infra_using_subcommand grants; and __fish_seen_subcommand_from add" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_using_subcommand grants; and __fish_seen_subcommand_from list" -l user -d 'A user, by name' -r
complete -c infra -n "__fish_infra_using_subcommand grants; and __fish_seen_subcommand_from list" -l group -d 'A group, by name' -r
complete -c infra -n "__fish_infra_using_subcommand grants; and __fish_seen_subcommand_from list" -l identity -d 'A machine identity, by name' -r
complete -c infra -n "__fish_infra_using_subcommand grants; and __fish_seen_subcommand_from list" -l destination -d 'Only grants on this destination (and its namespaces)' -r
complete -c infra -n "__fish_infra_using_subcommand grants; and __fish_seen_subcommand_from list" -l format -d 'Output format [default: table on a terminal, plain otherwise]' -r -f -a "table\t'An aligned table with a header, also into a pipe or file'
plain\t'Tab-separated lines without a header (the default off a terminal)'
json\t'JSON, for scripts'
yaml\t'YAML'"
complete -c infra -n "__fish_infra_using_subcommand grants; and __fish_seen_subcommand_from list" -l server -d 'Server to use (default: the one you logged in to last)' -r
complete -c infra -n "__fish_infra_using_subcommand grants; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c infra -n "__fish_infra_using_subcommand grants; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_using_subcommand grants; and __fish_seen_subcommand_from remove" -l user -d 'A user, by name' -r
complete -c infra -n "__fish_infra_using_subcommand grants; and __fish_seen_subcommand_from remove" -l group -d 'A group, by name' -r
complete -c infra -n "__fish_infra_using_subcommand grants; and __fish_seen_subcommand_from remove" -l identity -d 'A machine identity, by name' -r
complete -c infra -n "__fish_infra_using_subcommand grants; and __fish_seen_subcommand_from remove" -l role -d 'The role granted' -r
complete -c infra -n "__fish_infra_using_subcommand grants; and __fish_seen_subcommand_from remove" -l server -d 'Server to use (default: the one you logged in to last)' -r
complete -c infra -n "__fish_infra_using_subcommand grants; and __fish_seen_subcommand_from remove" -l force -d 'Succeed even if there is no such grant'
complete -c infra -n "__fish_infra_using_subcommand grants; and __fish_seen_subcommand_from remove" -s h -l help -d 'Print help'
complete -c infra -n "__fish_infra_using_subcommand grants; and __fish_seen_subcommand_from remove" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_using_subcommand grants; and __fish_seen_subcommand_from help" -f -a "add" -d 'Grant a role on a destination (or a namespace in it)'
complete -c infra -n "__fish_infra_using_subcommand grants; and __fish_seen_subcommand_from help" -f -a "list" -d 'List grants (yours, or everyone\'s for admins)'
complete -c infra -n "__fish_infra_using_subcommand grants; and __fish_seen_subcommand_from help" -f -a "remove" -d 'Remove a grant'
complete -c infra -n "__fish_infra_using_subcommand grants; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c infra -n "__fish_infra_using_subcommand destinations; and not __fish_seen_subcommand_from list remove help" -s h -l help -d 'Print help'
complete -c infra -n "__fish_infra_using_subcommand destinations; and not __fish_seen_subcommand_from list remove help" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_using_subcommand destinations; and not __fish_seen_subcommand_from list remove help" -f -a "list" -d 'List destinations and whether their connectors are connected'
complete -c infra -n "__fish_infra_using_subcommand destinations; and not __fish_seen_subcommand_from list remove help" -f -a "remove" -d 'Remove a destination'
complete -c infra -n "__fish_infra_using_subcommand destinations; and not __fish_seen_subcommand_from list remove help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c infra -n "__fish_infra_using_subcommand destinations; and __fish_seen_subcommand_from list" -l format -d 'Output format [default: table on a terminal, plain otherwise]' -r -f -a "table\t'An aligned table with a header, also into a pipe or file'
plain\t'Tab-separated lines without a header (the default off a terminal)'
json\t'JSON, for scripts'
yaml\t'YAML'"
complete -c infra -n "__fish_infra_using_subcommand destinations; and __fish_seen_subcommand_from list" -l server -d 'Server to use (default: the one you logged in to last)' -r
complete -c infra -n "__fish_infra_using_subcommand destinations; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c infra -n "__fish_infra_using_subcommand destinations; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_using_subcommand destinations; and __fish_seen_subcommand_from remove" -l server -d 'Server to use (default: the one you logged in to last)' -r
complete -c infra -n "__fish_infra_using_subcommand destinations; and __fish_seen_subcommand_from remove" -l force -d 'Succeed even if it does not exist'
complete -c infra -n "__fish_infra_using_subcommand destinations; and __fish_seen_subcommand_from remove" -s h -l help -d 'Print help'
complete -c infra -n "__fish_infra_using_subcommand destinations; and __fish_seen_subcommand_from remove" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_using_subcommand destinations; and __fish_seen_subcommand_from help" -f -a "list" -d 'List destinations and whether their connectors are connected'
complete -c infra -n "__fish_infra_using_subcommand destinations; and __fish_seen_subcommand_from help" -f -a "remove" -d 'Remove a destination'
complete -c infra -n "__fish_infra_using_subcommand destinations; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c infra -n "__fish_infra_using_subcommand keys; and not __fish_seen_subcommand_from add list remove help" -s h -l help -d 'Print help'
complete -c infra -n "__fish_infra_using_subcommand keys; and not __fish_seen_subcommand_from add list remove help" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_using_subcommand keys; and not __fish_seen_subcommand_from add list remove help" -f -a "add" -d 'Create an access key; it is printed once, on stdout'
complete -c infra -n "__fish_infra_using_subcommand keys; and not __fish_seen_subcommand_from add list remove help" -f -a "list" -d 'List access keys (yours; admins: --user NAME or --all)'
complete -c infra -n "__fish_infra_using_subcommand keys; and not __fish_seen_subcommand_from add list remove help" -f -a "remove" -d 'Revoke an access key, by name or id'
complete -c infra -n "__fish_infra_using_subcommand keys; and not __fish_seen_subcommand_from add list remove help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c infra -n "__fish_infra_using_subcommand keys; and __fish_seen_subcommand_from add" -l name -d 'A name for the key' -r
complete -c infra -n "__fish_infra_using_subcommand keys; and __fish_seen_subcommand_from add" -l expiry -d 'How long the key lasts, e.g. 720h or 30d' -r
complete -c infra -n "__fish_infra_using_subcommand keys; and __fish_seen_subcommand_from add" -l inactivity-timeout -d 'How long the key may go unused, e.g. 72h' -r
complete -c infra -n "__fish_infra_using_subcommand keys; and __fish_seen_subcommand_from add" -l user -d 'Create the key for another user (admins)' -r
complete -c infra -n "__fish_infra_using_subcommand keys; and __fish_seen_subcommand_from add" -l destination -d 'With --connector: the one destination the key serves [default: --name]' -r
complete -c infra -n "__fish_infra_using_subcommand keys; and __fish_seen_subcommand_from add" -l server -d 'Server to use (default: the one you logged in to last)' -r
complete -c infra -n "__fish_infra_using_subcommand keys; and __fish_seen_subcommand_from add" -l connector -d 'Create a key for a connector (admins)'
complete -c infra -n "__fish_infra_using_subcommand keys; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help'
complete -c infra -n "__fish_infra_using_subcommand keys; and __fish_seen_subcommand_from add" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_using_subcommand keys; and __fish_seen_subcommand_from list" -l user -d 'Keys of this user (admins)' -r
complete -c infra -n "__fish_infra_using_subcommand keys; and __fish_seen_subcommand_from list" -l format -d 'Output format [default: table on a terminal, plain otherwise]' -r -f -a "table\t'An aligned table with a header, also into a pipe or file'
plain\t'Tab-separated lines without a header (the default off a terminal)'
json\t'JSON, for scripts'
yaml\t'YAML'"
complete -c infra -n "__fish_infra_using_subcommand keys; and __fish_seen_subcommand_from list" -l server -d 'Server to use (default: the one you logged in to last)' -r
complete -c infra -n "__fish_infra_using_subcommand keys; and __fish_seen_subcommand_from list" -l all -d 'Everyone\'s keys (admins)'
complete -c infra -n "__fish_infra_using_subcommand keys; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c infra -n "__fish_infra_using_subcommand keys; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_using_subcommand keys; and __fish_seen_subcommand_from remove" -l user -d 'Whose key (admins); default: yours' -r
complete -c infra -n "__fish_infra_using_subcommand keys; and __fish_seen_subcommand_from remove" -l server -d 'Server to use (default: the one you logged in to last)' -r
complete -c infra -n "__fish_infra_using_subcommand keys; and __fish_seen_subcommand_from remove" -l force -d 'Succeed even if there is no such key'
complete -c infra -n "__fish_infra_using_subcommand keys; and __fish_seen_subcommand_from remove" -s h -l help -d 'Print help'
complete -c infra -n "__fish_infra_using_subcommand keys; and __fish_seen_subcommand_from remove" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_using_subcommand keys; and __fish_seen_subcommand_from help" -f -a "add" -d 'Create an access key; it is printed once, on stdout'
complete -c infra -n "__fish_infra_using_subcommand keys; and __fish_seen_subcommand_from help" -f -a "list" -d 'List access keys (yours; admins: --user NAME or --all)'
complete -c infra -n "__fish_infra_using_subcommand keys; and __fish_seen_subcommand_from help" -f -a "remove" -d 'Revoke an access key, by name or id'
complete -c infra -n "__fish_infra_using_subcommand keys; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c infra -n "__fish_infra_using_subcommand providers; and not __fish_seen_subcommand_from add list edit remove help" -s h -l help -d 'Print help'
complete -c infra -n "__fish_infra_using_subcommand providers; and not __fish_seen_subcommand_from add list edit remove help" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_using_subcommand providers; and not __fish_seen_subcommand_from add list edit remove help" -f -a "add" -d 'Add an OpenID Connect identity provider'
complete -c infra -n "__fish_infra_using_subcommand providers; and not __fish_seen_subcommand_from add list edit remove help" -f -a "list" -d 'List identity providers'
complete -c infra -n "__fish_infra_using_subcommand providers; and not __fish_seen_subcommand_from add list edit remove help" -f -a "edit" -d 'Change a provider\'s URL, client id or secret'
complete -c infra -n "__fish_infra_using_subcommand providers; and not __fish_seen_subcommand_from add list edit remove help" -f -a "remove" -d 'Remove a provider'
complete -c infra -n "__fish_infra_using_subcommand providers; and not __fish_seen_subcommand_from add list edit remove help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c infra -n "__fish_infra_using_subcommand providers; and __fish_seen_subcommand_from add" -l url -d 'The provider\'s issuer URL (a bare domain means https)' -r
complete -c infra -n "__fish_infra_using_subcommand providers; and __fish_seen_subcommand_from add" -l client-id -d 'The client id of the application registered at the provider' -r
complete -c infra -n "__fish_infra_using_subcommand providers; and __fish_seen_subcommand_from add" -l client-secret -d 'The client secret (or INFRA_PROVIDER_CLIENT_SECRET)' -r
complete -c infra -n "__fish_infra_using_subcommand providers; and __fish_seen_subcommand_from add" -l kind -d 'oidc, okta, azure, google, gitlab, dex or keycloak' -r
complete -c infra -n "__fish_infra_using_subcommand providers; and __fish_seen_subcommand_from add" -l ca-file -d 'PEM file with the provider\'s CA, when it is not publicly trusted' -r -F
complete -c infra -n "__fish_infra_using_subcommand providers; and __fish_seen_subcommand_from add" -l username-claim -d 'The claim that names users, e.g. preferred_username (Dex, Keycloak, GitLab) [default: the verified email]' -r
complete -c infra -n "__fish_infra_using_subcommand providers; and __fish_seen_subcommand_from add" -l server -d 'Server to use (default: the one you logged in to last)' -r
complete -c infra -n "__fish_infra_using_subcommand providers; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help'
complete -c infra -n "__fish_infra_using_subcommand providers; and __fish_seen_subcommand_from add" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_using_subcommand providers; and __fish_seen_subcommand_from list" -l format -d 'Output format [default: table on a terminal, plain otherwise]' -r -f -a "table\t'An aligned table with a header, also into a pipe or file'
plain\t'Tab-separated lines without a header (the default off a terminal)'
json\t'JSON, for scripts'
yaml\t'YAML'"
complete -c infra -n "__fish_infra_using_subcommand providers; and __fish_seen_subcommand_from list" -l server -d 'Server to use (default: the one you logged in to last)' -r
complete -c infra -n "__fish_infra_using_subcommand providers; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c infra -n "__fish_infra_using_subcommand providers; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_using_subcommand providers; and __fish_seen_subcommand_from edit" -l url -d 'A new issuer URL' -r
complete -c infra -n "__fish_infra_using_subcommand providers; and __fish_seen_subcommand_from edit" -l client-id -d 'A new client id' -r
complete -c infra -n "__fish_infra_using_subcommand providers; and __fish_seen_subcommand_from edit" -l client-secret -d 'A new client secret (or INFRA_PROVIDER_CLIENT_SECRET)' -r
complete -c infra -n "__fish_infra_using_subcommand providers; and __fish_seen_subcommand_from edit" -l ca-file -d 'PEM file with the provider\'s CA' -r -F
complete -c infra -n "__fish_infra_using_subcommand providers; and __fish_seen_subcommand_from edit" -l username-claim -d 'The claim that names new users, e.g. preferred_username; "email" goes back to the verified email' -r
complete -c infra -n "__fish_infra_using_subcommand providers; and __fish_seen_subcommand_from edit" -l server -d 'Server to use (default: the one you logged in to last)' -r
complete -c infra -n "__fish_infra_using_subcommand providers; and __fish_seen_subcommand_from edit" -s h -l help -d 'Print help'
complete -c infra -n "__fish_infra_using_subcommand providers; and __fish_seen_subcommand_from edit" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_using_subcommand providers; and __fish_seen_subcommand_from remove" -l server -d 'Server to use (default: the one you logged in to last)' -r
complete -c infra -n "__fish_infra_using_subcommand providers; and __fish_seen_subcommand_from remove" -l force -d 'Succeed even if it does not exist'
complete -c infra -n "__fish_infra_using_subcommand providers; and __fish_seen_subcommand_from remove" -s h -l help -d 'Print help'
complete -c infra -n "__fish_infra_using_subcommand providers; and __fish_seen_subcommand_from remove" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_using_subcommand providers; and __fish_seen_subcommand_from help" -f -a "add" -d 'Add an OpenID Connect identity provider'
complete -c infra -n "__fish_infra_using_subcommand providers; and __fish_seen_subcommand_from help" -f -a "list" -d 'List identity providers'
complete -c infra -n "__fish_infra_using_subcommand providers; and __fish_seen_subcommand_from help" -f -a "edit" -d 'Change a provider\'s URL, client id or secret'
complete -c infra -n "__fish_infra_using_subcommand providers; and __fish_seen_subcommand_from help" -f -a "remove" -d 'Remove a provider'
complete -c infra -n "__fish_infra_using_subcommand providers; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c infra -n "__fish_infra_using_subcommand audit" -l action -d 'Only this action (e.g. grant.create, login, destination.register)' -r
complete -c infra -n "__fish_infra_using_subcommand audit" -l actor -d 'Only entries by this actor (a user or identity name)' -r
complete -c infra -n "__fish_infra_using_subcommand audit" -l since -d 'Only entries at or after this time: RFC 3339, a date (2026-12-01), or "2026-12-01 10:00" (UTC)' -r
complete -c infra -n "__fish_infra_using_subcommand audit" -l until -d 'Only entries before this time, in the same forms (a date includes that day)' -r
complete -c infra -n "__fish_infra_using_subcommand audit" -l limit -d 'At most this many entries, newest first' -r
complete -c infra -n "__fish_infra_using_subcommand audit" -l format -d 'Output format [default: table on a terminal, plain otherwise]' -r -f -a "table\t'An aligned table with a header, also into a pipe or file'
plain\t'Tab-separated lines without a header (the default off a terminal)'
json\t'JSON, for scripts'
yaml\t'YAML'"
complete -c infra -n "__fish_infra_using_subcommand audit" -l server -d 'Server to use (default: the one you logged in to last)' -r
complete -c infra -n "__fish_infra_using_subcommand audit" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c infra -n "__fish_infra_using_subcommand audit" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_using_subcommand sessions; and not __fish_seen_subcommand_from list play export help" -s h -l help -d 'Print help'
complete -c infra -n "__fish_infra_using_subcommand sessions; and not __fish_seen_subcommand_from list play export help" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_using_subcommand sessions; and not __fish_seen_subcommand_from list play export help" -f -a "list" -d 'List recorded sessions, newest first (everyone\'s for admins, else your own)'
complete -c infra -n "__fish_infra_using_subcommand sessions; and not __fish_seen_subcommand_from list play export help" -f -a "play" -d 'Play a session back in this terminal, at the pace it happened'
complete -c infra -n "__fish_infra_using_subcommand sessions; and not __fish_seen_subcommand_from list play export help" -f -a "export" -d 'Write a session\'s recording, an asciicast v2 file (`asciinema play FILE` plays it)'
complete -c infra -n "__fish_infra_using_subcommand sessions; and not __fish_seen_subcommand_from list play export help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c infra -n "__fish_infra_using_subcommand sessions; and __fish_seen_subcommand_from list" -l user -d 'Only this user\'s sessions (admins)' -r
complete -c infra -n "__fish_infra_using_subcommand sessions; and __fish_seen_subcommand_from list" -l destination -d 'Only sessions on this destination' -r
complete -c infra -n "__fish_infra_using_subcommand sessions; and __fish_seen_subcommand_from list" -l limit -d 'At most this many sessions' -r
complete -c infra -n "__fish_infra_using_subcommand sessions; and __fish_seen_subcommand_from list" -l format -d 'Output format [default: table on a terminal, plain otherwise]' -r -f -a "table\t'An aligned table with a header, also into a pipe or file'
plain\t'Tab-separated lines without a header (the default off a terminal)'
json\t'JSON, for scripts'
yaml\t'YAML'"
complete -c infra -n "__fish_infra_using_subcommand sessions; and __fish_seen_subcommand_from list" -l server -d 'Server to use (default: the one you logged in to last)' -r
complete -c infra -n "__fish_infra_using_subcommand sessions; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c infra -n "__fish_infra_using_subcommand sessions; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_using_subcommand sessions; and __fish_seen_subcommand_from play" -l speed -d 'Play this many times faster (0.5 plays at half speed)' -r
complete -c infra -n "__fish_infra_using_subcommand sessions; and __fish_seen_subcommand_from play" -l idle-limit -d 'Shorten every pause to at most this long' -r
complete -c infra -n "__fish_infra_using_subcommand sessions; and __fish_seen_subcommand_from play" -l server -d 'Server to use (default: the one you logged in to last)' -r
complete -c infra -n "__fish_infra_using_subcommand sessions; and __fish_seen_subcommand_from play" -s h -l help -d 'Print help'
complete -c infra -n "__fish_infra_using_subcommand sessions; and __fish_seen_subcommand_from play" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_using_subcommand sessions; and __fish_seen_subcommand_from export" -s o -l output -d 'Write here instead of to standard output' -r -F
complete -c infra -n "__fish_infra_using_subcommand sessions; and __fish_seen_subcommand_from export" -l server -d 'Server to use (default: the one you logged in to last)' -r
complete -c infra -n "__fish_infra_using_subcommand sessions; and __fish_seen_subcommand_from export" -s h -l help -d 'Print help'
complete -c infra -n "__fish_infra_using_subcommand sessions; and __fish_seen_subcommand_from export" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_using_subcommand sessions; and __fish_seen_subcommand_from help" -f -a "list" -d 'List recorded sessions, newest first (everyone\'s for admins, else your own)'
complete -c infra -n "__fish_infra_using_subcommand sessions; and __fish_seen_subcommand_from help" -f -a "play" -d 'Play a session back in this terminal, at the pace it happened'
complete -c infra -n "__fish_infra_using_subcommand sessions; and __fish_seen_subcommand_from help" -f -a "export" -d 'Write a session\'s recording, an asciicast v2 file (`asciinema play FILE` plays it)'
complete -c infra -n "__fish_infra_using_subcommand sessions; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c infra -n "__fish_infra_using_subcommand identities; and not __fish_seen_subcommand_from add list remove oidc-auth help" -s h -l help -d 'Print help'
complete -c infra -n "__fish_infra_using_subcommand identities; and not __fish_seen_subcommand_from add list remove oidc-auth help" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_using_subcommand identities; and not __fish_seen_subcommand_from add list remove oidc-auth help" -f -a "add" -d 'Add a machine identity'
complete -c infra -n "__fish_infra_using_subcommand identities; and not __fish_seen_subcommand_from add list remove oidc-auth help" -f -a "list" -d 'List machine identities'
complete -c infra -n "__fish_infra_using_subcommand identities; and not __fish_seen_subcommand_from add list remove oidc-auth help" -f -a "remove" -d 'Remove a machine identity, with its grants and access tokens'
complete -c infra -n "__fish_infra_using_subcommand identities; and not __fish_seen_subcommand_from add list remove oidc-auth help" -f -a "oidc-auth" -d 'How an identity logs in with its workload\'s OIDC JWT'
complete -c infra -n "__fish_infra_using_subcommand identities; and not __fish_seen_subcommand_from add list remove oidc-auth help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c infra -n "__fish_infra_using_subcommand identities; and __fish_seen_subcommand_from add" -l server -d 'Server to use (default: the one you logged in to last)' -r
complete -c infra -n "__fish_infra_using_subcommand identities; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help'
complete -c infra -n "__fish_infra_using_subcommand identities; and __fish_seen_subcommand_from add" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_using_subcommand identities; and __fish_seen_subcommand_from list" -l format -d 'Output format [default: table on a terminal, plain otherwise]' -r -f -a "table\t'An aligned table with a header, also into a pipe or file'
plain\t'Tab-separated lines without a header (the default off a terminal)'
json\t'JSON, for scripts'
yaml\t'YAML'"
complete -c infra -n "__fish_infra_using_subcommand identities; and __fish_seen_subcommand_from list" -l server -d 'Server to use (default: the one you logged in to last)' -r
complete -c infra -n "__fish_infra_using_subcommand identities; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c infra -n "__fish_infra_using_subcommand identities; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_using_subcommand identities; and __fish_seen_subcommand_from remove" -l server -d 'Server to use (default: the one you logged in to last)' -r
complete -c infra -n "__fish_infra_using_subcommand identities; and __fish_seen_subcommand_from remove" -l force -d 'Succeed even if it does not exist'
complete -c infra -n "__fish_infra_using_subcommand identities; and __fish_seen_subcommand_from remove" -s h -l help -d 'Print help'
complete -c infra -n "__fish_infra_using_subcommand identities; and __fish_seen_subcommand_from remove" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_using_subcommand identities; and __fish_seen_subcommand_from oidc-auth" -s h -l help -d 'Print help'
complete -c infra -n "__fish_infra_using_subcommand identities; and __fish_seen_subcommand_from oidc-auth" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_using_subcommand identities; and __fish_seen_subcommand_from oidc-auth" -f -a "set" -d 'Set (replace) the identity\'s oidc-auth configuration'
complete -c infra -n "__fish_infra_using_subcommand identities; and __fish_seen_subcommand_from oidc-auth" -f -a "show" -d 'Show the identity\'s oidc-auth configuration'
complete -c infra -n "__fish_infra_using_subcommand identities; and __fish_seen_subcommand_from oidc-auth" -f -a "remove" -d 'Remove the identity\'s oidc-auth configuration and revoke the access tokens it issued'
complete -c infra -n "__fish_infra_using_subcommand identities; and __fish_seen_subcommand_from oidc-auth" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c infra -n "__fish_infra_using_subcommand identities; and __fish_seen_subcommand_from help" -f -a "add" -d 'Add a machine identity'
complete -c infra -n "__fish_infra_using_subcommand identities; and __fish_seen_subcommand_from help" -f -a "list" -d 'List machine identities'
complete -c infra -n "__fish_infra_using_subcommand identities; and __fish_seen_subcommand_from help" -f -a "remove" -d 'Remove a machine identity, with its grants and access tokens'
complete -c infra -n "__fish_infra_using_subcommand identities; and __fish_seen_subcommand_from help" -f -a "oidc-auth" -d 'How an identity logs in with its workload\'s OIDC JWT'
complete -c infra -n "__fish_infra_using_subcommand identities; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c infra -n "__fish_infra_using_subcommand access; and not __fish_seen_subcommand_from explain help" -s h -l help -d 'Print help'
complete -c infra -n "__fish_infra_using_subcommand access; and not __fish_seen_subcommand_from explain help" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_using_subcommand access; and not __fish_seen_subcommand_from explain help" -f -a "explain" -d 'Explain a user\'s access to a destination: groups, grants, RBAC bindings'
complete -c infra -n "__fish_infra_using_subcommand access; and not __fish_seen_subcommand_from explain help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c infra -n "__fish_infra_using_subcommand access; and __fish_seen_subcommand_from explain" -l format -d 'Output format [default: table on a terminal, plain otherwise]' -r -f -a "table\t'An aligned table with a header, also into a pipe or file'
plain\t'Tab-separated lines without a header (the default off a terminal)'
json\t'JSON, for scripts'
yaml\t'YAML'"
complete -c infra -n "__fish_infra_using_subcommand access; and __fish_seen_subcommand_from explain" -l server -d 'Server to use (default: the one you logged in to last)' -r
complete -c infra -n "__fish_infra_using_subcommand access; and __fish_seen_subcommand_from explain" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c infra -n "__fish_infra_using_subcommand access; and __fish_seen_subcommand_from explain" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_using_subcommand access; and __fish_seen_subcommand_from help" -f -a "explain" -d 'Explain a user\'s access to a destination: groups, grants, RBAC bindings'
complete -c infra -n "__fish_infra_using_subcommand access; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c infra -n "__fish_infra_using_subcommand tokens; and not __fish_seen_subcommand_from create help" -s h -l help -d 'Print help'
complete -c infra -n "__fish_infra_using_subcommand tokens; and not __fish_seen_subcommand_from create help" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_using_subcommand tokens; and not __fish_seen_subcommand_from create help" -f -a "create" -d 'Print a credential for a cluster (kubectl runs this; see `infra login`)'
complete -c infra -n "__fish_infra_using_subcommand tokens; and not __fish_seen_subcommand_from create help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c infra -n "__fish_infra_using_subcommand tokens; and __fish_seen_subcommand_from create" -l server -d 'The server: host, host:port or https URL (default: the current one)' -r
complete -c infra -n "__fish_infra_using_subcommand tokens; and __fish_seen_subcommand_from create" -l destination -d 'The destination (cluster) to get a token for' -r
complete -c infra -n "__fish_infra_using_subcommand tokens; and __fish_seen_subcommand_from create" -s h -l help -d 'Print help'
complete -c infra -n "__fish_infra_using_subcommand tokens; and __fish_seen_subcommand_from create" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_using_subcommand tokens; and __fish_seen_subcommand_from help" -f -a "create" -d 'Print a credential for a cluster (kubectl runs this; see `infra login`)'
complete -c infra -n "__fish_infra_using_subcommand tokens; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c infra -n "__fish_infra_using_subcommand server" -l log-format -d 'How to write logs: text, or json (one object per line)' -r -f -a "text\t'Lines for people (colour only on a terminal, never with NO_COLOR)'
json\t'One JSON object per line, for log collectors'"
complete -c infra -n "__fish_infra_using_subcommand server" -l listen -d 'Address to serve HTTPS on' -r
complete -c infra -n "__fish_infra_using_subcommand server" -l tls-cert -d 'PEM certificate to serve (default: a self-signed one kept in the data dir)' -r -F
complete -c infra -n "__fish_infra_using_subcommand server" -l tls-key -d 'PEM private key for --tls-cert' -r -F
complete -c infra -n "__fish_infra_using_subcommand server" -l data-dir -d 'Where the server keeps its SQLite store, certificate and root key' -r -F
complete -c infra -n "__fish_infra_using_subcommand server" -l db -d 'PostgreSQL URL (postgres://USER:PASS@HOST/DB); default: SQLite in the data dir' -r
complete -c infra -n "__fish_infra_using_subcommand server" -l config -d 'YAML file that declares providers, users, groups, grants and an admin key' -r -F
complete -c infra -n "__fish_infra_using_subcommand server" -l root-key-file -d 'File with the key that encrypts secrets at rest (default: root.key in the data dir)' -r -F
complete -c infra -n "__fish_infra_using_subcommand server" -l session-expiry -d 'How long a key issued at login lasts' -r
complete -c infra -n "__fish_infra_using_subcommand server" -l session-inactivity-timeout -d 'How long a key issued at login may go unused' -r
complete -c infra -n "__fish_infra_using_subcommand server" -l url -d 'The server\'s public URL: the issuer of cluster tokens (default: https://LISTEN-ADDRESS)' -r
complete -c infra -n "__fish_infra_using_subcommand server" -l token-ttl -d 'How long a cluster token lasts' -r
complete -c infra -n "__fish_infra_using_subcommand server" -l idp-revalidate-interval -d 'Re-check a user with their identity provider when the last check is older than this' -r
complete -c infra -n "__fish_infra_using_subcommand server" -l signing-key-rotation -d 'How often the token signing key is replaced' -r
complete -c infra -n "__fish_infra_using_subcommand server" -l oidc-issuer-url -d 'Register this OpenID provider at start (its issuer URL)' -r
complete -c infra -n "__fish_infra_using_subcommand server" -l oidc-issuer-client-id -d 'The client id registered at --oidc-issuer-url' -r
complete -c infra -n "__fish_infra_using_subcommand server" -l oidc-issuer-client-secret -d 'The client secret registered at --oidc-issuer-url' -r
complete -c infra -n "__fish_infra_using_subcommand server" -l oidc-username-claim -d 'The claim that names users of the --oidc-issuer-url provider, e.g. preferred_username [default: the verified email]' -r
complete -c infra -n "__fish_infra_using_subcommand server" -l oidc-ca-file -d 'PEM file with the CA of --oidc-issuer-url, when it is not publicly trusted' -r -F
complete -c infra -n "__fish_infra_using_subcommand server" -l oidc-provider-name -d 'The name of the provider registered from the --oidc-issuer-* flags' -r
complete -c infra -n "__fish_infra_using_subcommand server" -l oidc-callback-url -d 'The public URL of the server\'s web sign-in callback (behind a proxy)' -r
complete -c infra -n "__fish_infra_using_subcommand server" -l device-code-ttl -d 'How long a device code (`infra login --device`) waits for approval' -r
complete -c infra -n "__fish_infra_using_subcommand server" -l device-poll-interval -d 'How often a device may poll for its sign-in at first' -r
complete -c infra -n "__fish_infra_using_subcommand server" -l trusted-proxies -d 'Load balancers and proxies (CIDR,…) whose X-Forwarded-For or PROXY header names the client' -r
complete -c infra -n "__fish_infra_using_subcommand server" -l max-connections -d 'Connections open at once at most; more are closed at once' -r
complete -c infra -n "__fish_infra_using_subcommand server" -l header-read-timeout -d 'Time a client has for its TLS handshake and each request\'s headers (also ends idle keep-alive)' -r
complete -c infra -n "__fish_infra_using_subcommand server" -l idle-timeout -d 'Close a connection with no request in progress for this long (a watch, a long poll or an exec session is one in progress while it lasts)' -r
complete -c infra -n "__fish_infra_using_subcommand server" -l metrics-listen -d 'Serve /metrics and /healthz over plain HTTP here (keep it private); "off" for none [default: 127.0.0.1:9464, skipped with a warning when taken]' -r
complete -c infra -n "__fish_infra_using_subcommand server" -l request-timeout -d 'Longest time a request may take, body included (long polls take up to 30s)' -r
complete -c infra -n "__fish_infra_using_subcommand server" -l audit-retention -d 'How long the audit log keeps an entry (0 keeps them forever)' -r
complete -c infra -n "__fish_infra_using_subcommand server" -l session-retention -d 'How long recorded exec and attach sessions are kept (0 keeps them forever)' -r
complete -c infra -n "__fish_infra_using_subcommand server" -l max-session-bytes -d 'The largest a session\'s recording may grow (bytes of asciicast); a connector that reaches it ends the session' -r
complete -c infra -n "__fish_infra_using_subcommand server" -l audit-prune-interval -d 'How often old audit entries are removed (by one replica)' -r
complete -c infra -n "__fish_infra_using_subcommand server" -l max-long-polls -d 'Connectors\' long polls one replica holds open at once (one per connector); beyond it, 503 with Retry-After' -r
complete -c infra -n "__fish_infra_using_subcommand server" -l db-max-connections -d 'Database connections per replica [default: 8 for SQLite, 16 for PostgreSQL]' -r
complete -c infra -n "__fish_infra_using_subcommand server" -l print-admin-key -d 'Print the first start\'s admin access key, while it has not been used, and exit'
complete -c infra -n "__fish_infra_using_subcommand server" -l dev -d 'Development mode: an embedded OpenID provider that signs in anyone (no real security)'
complete -c infra -n "__fish_infra_using_subcommand server" -l ephemeral -d 'Keep everything in a temporary directory, removed at exit'
complete -c infra -n "__fish_infra_using_subcommand server" -l dev-allow-remote -d 'Let --dev listen on a non-loopback address (anyone who reaches it can sign in)'
complete -c infra -n "__fish_infra_using_subcommand server" -l proxy-protocol -d 'Read a PROXY protocol v2 header (before TLS) from --trusted-proxies'
complete -c infra -n "__fish_infra_using_subcommand server" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c infra -n "__fish_infra_using_subcommand server" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_using_subcommand connector" -l log-format -d 'How to write logs: text, or json (one object per line)' -r -f -a "text\t'Lines for people (colour only on a terminal, never with NO_COLOR)'
json\t'One JSON object per line, for log collectors'"
complete -c infra -n "__fish_infra_using_subcommand connector" -l server -d 'The infra server\'s URL (https://infra.example.com)' -r
complete -c infra -n "__fish_infra_using_subcommand connector" -l access-key -d 'A connector access key (`infra keys add --connector`)' -r
complete -c infra -n "__fish_infra_using_subcommand connector" -l access-key-file -d 'Read the connector access key from this file instead (kept out of `ps` and the environment)' -r -F
complete -c infra -n "__fish_infra_using_subcommand connector" -l name -d 'The destination name users see (e.g. prod)' -r
complete -c infra -n "__fish_infra_using_subcommand connector" -l listen -d 'Address to serve on [default: 0.0.0.0:8443]' -r
complete -c infra -n "__fish_infra_using_subcommand connector" -l endpoint -d 'HOST:PORT users reach this connector at (written into their kubeconfig)' -r
complete -c infra -n "__fish_infra_using_subcommand connector" -l ca-cert -d 'CA certificate (PEM) that signs the serving certificate [default: generated and kept]' -r -F
complete -c infra -n "__fish_infra_using_subcommand connector" -l ca-key -d 'The CA\'s private key (PEM)' -r -F
complete -c infra -n "__fish_infra_using_subcommand connector" -l data-dir -d 'Where a generated CA is kept [default: the platform\'s data dir]/infra-connector' -r -F
complete -c infra -n "__fish_infra_using_subcommand connector" -l kubeconfig -d 'Reach the cluster as a kubeconfig context does (outside a cluster: kind, minikube, k3d, …)' -r -F
complete -c infra -n "__fish_infra_using_subcommand connector" -l context -d 'The kubeconfig\'s context to use [default: its current context]' -r
complete -c infra -n "__fish_infra_using_subcommand connector" -l kube-api -d 'The Kubernetes API [default: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT]' -r
complete -c infra -n "__fish_infra_using_subcommand connector" -l kube-token-file -d 'The connector\'s service-account token, re-read when it changes' -r -F
complete -c infra -n "__fish_infra_using_subcommand connector" -l kube-ca-file -d 'The Kubernetes API\'s CA (PEM)' -r -F
complete -c infra -n "__fish_infra_using_subcommand connector" -l server-ca-file -d 'Trust the infra server\'s certificate from this PEM file' -r -F
complete -c infra -n "__fish_infra_using_subcommand connector" -l server-trusted-fingerprint -d 'Trust the infra server\'s certificate with this SHA-256 fingerprint' -r
complete -c infra -n "__fish_infra_using_subcommand connector" -l sync-rbac -d 'Keep Kubernetes RBAC bindings in step with infra\'s grants' -r -f -a "true\t''
false\t''"
complete -c infra -n "__fish_infra_using_subcommand connector" -l max-session-bytes -d 'The largest a session\'s recording may grow; a session that reaches it is ended' -r
complete -c infra -n "__fish_infra_using_subcommand connector" -l config -d 'YAML file with any of these settings (camelCase keys)' -r -F
complete -c infra -n "__fish_infra_using_subcommand connector" -l heartbeat -d 'How often to heartbeat to the server [default: 5m while the grants\' long poll tells the server the connector is alive, else 30s]' -r
complete -c infra -n "__fish_infra_using_subcommand connector" -l rbac-poll -d 'How often to retry grants that could not be applied yet' -r
complete -c infra -n "__fish_infra_using_subcommand connector" -l rbac-resync -d 'How often to reconcile every binding anyway (repairs hand edits)' -r
complete -c infra -n "__fish_infra_using_subcommand connector" -l leeway -d 'Clock-skew leeway for token expiry, in seconds' -r
complete -c infra -n "__fish_infra_using_subcommand connector" -l metrics-listen -d 'Serve /healthz and /metrics over plain HTTP here (off the users\' port); "off" for none [default: 127.0.0.1:9465]' -r
complete -c infra -n "__fish_infra_using_subcommand connector" -l trusted-proxies -d 'Load balancers and proxies (CIDR,…) whose X-Forwarded-For or PROXY header names the client' -r
complete -c infra -n "__fish_infra_using_subcommand connector" -l max-connections -d 'Connections open at once at most; more are closed at once' -r
complete -c infra -n "__fish_infra_using_subcommand connector" -l header-read-timeout -d 'Time a client has for its TLS handshake and each request\'s headers (also ends idle keep-alive)' -r
complete -c infra -n "__fish_infra_using_subcommand connector" -l idle-timeout -d 'Close a connection with no request in progress for this long (a watch, a long poll or an exec session is one in progress while it lasts)' -r
complete -c infra -n "__fish_infra_using_subcommand connector" -l server-skip-tls-verify -d 'Do not verify the infra server\'s certificate (unsafe)'
complete -c infra -n "__fish_infra_using_subcommand connector" -l record-sessions -d 'Record every exec and attach session through this connector (asciicast v2, kept by the server: `infra sessions list`); a session that cannot be recorded is refused. Grants may ask for it too (`infra grants add --record-sessions`)'
complete -c infra -n "__fish_infra_using_subcommand connector" -l proxy-protocol -d 'Read a PROXY protocol v2 header (before TLS) from --trusted-proxies'
complete -c infra -n "__fish_infra_using_subcommand connector" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c infra -n "__fish_infra_using_subcommand connector" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_using_subcommand completion" -s h -l help -d 'Print help'
complete -c infra -n "__fish_infra_using_subcommand completion" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_using_subcommand version" -l server -d 'Server to use (default: the one you logged in to last)' -r
complete -c infra -n "__fish_infra_using_subcommand version" -l format -d 'Output format [default: table on a terminal, plain otherwise]' -r -f -a "table\t'An aligned table with a header, also into a pipe or file'
plain\t'Tab-separated lines without a header (the default off a terminal)'
json\t'JSON, for scripts'
yaml\t'YAML'"
complete -c infra -n "__fish_infra_using_subcommand version" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c infra -n "__fish_infra_using_subcommand version" -s V -l version -d 'Print version'
complete -c infra -n "__fish_infra_using_subcommand help; and not __fish_seen_subcommand_from login logout status whoami list use users groups grants destinations keys providers audit sessions identities access tokens server connector completion version help" -f -a "login" -d 'Log in to an infra server'
complete -c infra -n "__fish_infra_using_subcommand help; and not __fish_seen_subcommand_from login logout status whoami list use users groups grants destinations keys providers audit sessions identities access tokens server connector completion version help" -f -a "logout" -d 'Log out: revoke the access key and forget it on this machine'
complete -c infra -n "__fish_infra_using_subcommand help; and not __fish_seen_subcommand_from login logout status whoami list use users groups grants destinations keys providers audit sessions identities access tokens server connector completion version help" -f -a "status" -d 'Show where you are logged in and whether each key still works'
complete -c infra -n "__fish_infra_using_subcommand help; and not __fish_seen_subcommand_from login logout status whoami list use users groups grants destinations keys providers audit sessions identities access tokens server connector completion version help" -f -a "whoami" -d 'Show whom you are logged in as, and your access to a destination'
complete -c infra -n "__fish_infra_using_subcommand help; and not __fish_seen_subcommand_from login logout status whoami list use users groups grants destinations keys providers audit sessions identities access tokens server connector completion version help" -f -a "list" -d 'List the clusters and namespaces you can reach, with your roles'
complete -c infra -n "__fish_infra_using_subcommand help; and not __fish_seen_subcommand_from login logout status whoami list use users groups grants destinations keys providers audit sessions identities access tokens server connector completion version help" -f -a "use" -d 'Switch kubectl to a cluster (or a namespace in it) you can reach'
complete -c infra -n "__fish_infra_using_subcommand help; and not __fish_seen_subcommand_from login logout status whoami list use users groups grants destinations keys providers audit sessions identities access tokens server connector completion version help" -f -a "users" -d 'Manage users (admins)'
complete -c infra -n "__fish_infra_using_subcommand help; and not __fish_seen_subcommand_from login logout status whoami list use users groups grants destinations keys providers audit sessions identities access tokens server connector completion version help" -f -a "groups" -d 'Manage groups and their members (admins)'
complete -c infra -n "__fish_infra_using_subcommand help; and not __fish_seen_subcommand_from login logout status whoami list use users groups grants destinations keys providers audit sessions identities access tokens server connector completion version help" -f -a "grants" -d 'Manage grants: who may do what where'
complete -c infra -n "__fish_infra_using_subcommand help; and not __fish_seen_subcommand_from login logout status whoami list use users groups grants destinations keys providers audit sessions identities access tokens server connector completion version help" -f -a "destinations" -d 'List and remove destinations (clusters)'
complete -c infra -n "__fish_infra_using_subcommand help; and not __fish_seen_subcommand_from login logout status whoami list use users groups grants destinations keys providers audit sessions identities access tokens server connector completion version help" -f -a "keys" -d 'Manage access keys'
complete -c infra -n "__fish_infra_using_subcommand help; and not __fish_seen_subcommand_from login logout status whoami list use users groups grants destinations keys providers audit sessions identities access tokens server connector completion version help" -f -a "providers" -d 'Manage identity providers (admins)'
complete -c infra -n "__fish_infra_using_subcommand help; and not __fish_seen_subcommand_from login logout status whoami list use users groups grants destinations keys providers audit sessions identities access tokens server connector completion version help" -f -a "audit" -d 'Show the audit log (admins)'
complete -c infra -n "__fish_infra_using_subcommand help; and not __fish_seen_subcommand_from login logout status whoami list use users groups grants destinations keys providers audit sessions identities access tokens server connector completion version help" -f -a "sessions" -d 'Recorded exec and attach sessions: list, play back, export'
complete -c infra -n "__fish_infra_using_subcommand help; and not __fish_seen_subcommand_from login logout status whoami list use users groups grants destinations keys providers audit sessions identities access tokens server connector completion version help" -f -a "identities" -d 'Manage machine identities and their OIDC JWT logins (admins)'
complete -c infra -n "__fish_infra_using_subcommand help; and not __fish_seen_subcommand_from login logout status whoami list use users groups grants destinations keys providers audit sessions identities access tokens server connector completion version help" -f -a "access" -d 'Explain access: who may do what where, and why'
complete -c infra -n "__fish_infra_using_subcommand help; and not __fish_seen_subcommand_from login logout status whoami list use users groups grants destinations keys providers audit sessions identities access tokens server connector completion version help" -f -a "tokens" -d 'Credentials for clusters: kubectl\'s exec plugin'
complete -c infra -n "__fish_infra_using_subcommand help; and not __fish_seen_subcommand_from login logout status whoami list use users groups grants destinations keys providers audit sessions identities access tokens server connector completion version help" -f -a "server" -d 'Run the infra API server'
complete -c infra -n "__fish_infra_using_subcommand help; and not __fish_seen_subcommand_from login logout status whoami list use users groups grants destinations keys providers audit sessions identities access tokens server connector completion version help" -f -a "connector" -d 'Run the connector next to a cluster\'s API server'
complete -c infra -n "__fish_infra_using_subcommand help; and not __fish_seen_subcommand_from login logout status whoami list use users groups grants destinations keys providers audit sessions identities access tokens server connector completion version help" -f -a "completion" -d 'Print the completion script for a shell'
complete -c infra -n "__fish_infra_using_subcommand help; and not __fish_seen_subcommand_from login logout status whoami list use users groups grants destinations keys providers audit sessions identities access tokens server connector completion version help" -f -a "version" -d 'Print the CLI\'s version and the server\'s'
complete -c infra -n "__fish_infra_using_subcommand help; and not __fish_seen_subcommand_from login logout status whoami list use users groups grants destinations keys providers audit sessions identities access tokens server connector completion version help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c infra -n "__fish_infra_using_subcommand help; and __fish_seen_subcommand_from users" -f -a "add" -d 'Add a user'
complete -c infra -n "__fish_infra_using_subcommand help; and __fish_seen_subcommand_from users" -f -a "list" -d 'List users'
complete -c infra -n "__fish_infra_using_subcommand help; and __fish_seen_subcommand_from users" -f -a "edit" -d 'Change a local user\'s password (yours: give the current one first)'
complete -c infra -n "__fish_infra_using_subcommand help; and __fish_seen_subcommand_from users" -f -a "remove" -d 'Remove a user, with their grants and keys'
complete -c infra -n "__fish_infra_using_subcommand help; and __fish_seen_subcommand_from groups" -f -a "add" -d 'Add a group'
complete -c infra -n "__fish_infra_using_subcommand help; and __fish_seen_subcommand_from groups" -f -a "list" -d 'List groups'
complete -c infra -n "__fish_infra_using_subcommand help; and __fish_seen_subcommand_from groups" -f -a "remove" -d 'Remove a group and its grants'
complete -c infra -n "__fish_infra_using_subcommand help; and __fish_seen_subcommand_from groups" -f -a "adduser" -d 'Add a user to a group'
complete -c infra -n "__fish_infra_using_subcommand help; and __fish_seen_subcommand_from groups" -f -a "removeuser" -d 'Remove a user from a group'
complete -c infra -n "__fish_infra_using_subcommand help; and __fish_seen_subcommand_from grants" -f -a "add" -d 'Grant a role on a destination (or a namespace in it)'
complete -c infra -n "__fish_infra_using_subcommand help; and __fish_seen_subcommand_from grants" -f -a "list" -d 'List grants (yours, or everyone\'s for admins)'
complete -c infra -n "__fish_infra_using_subcommand help; and __fish_seen_subcommand_from grants" -f -a "remove" -d 'Remove a grant'
complete -c infra -n "__fish_infra_using_subcommand help; and __fish_seen_subcommand_from destinations" -f -a "list" -d 'List destinations and whether their connectors are connected'
complete -c infra -n "__fish_infra_using_subcommand help; and __fish_seen_subcommand_from destinations" -f -a "remove" -d 'Remove a destination'
complete -c infra -n "__fish_infra_using_subcommand help; and __fish_seen_subcommand_from keys" -f -a "add" -d 'Create an access key; it is printed once, on stdout'
complete -c infra -n "__fish_infra_using_subcommand help; and __fish_seen_subcommand_from keys" -f -a "list" -d 'List access keys (yours; admins: --user NAME or --all)'
complete -c infra -n "__fish_infra_using_subcommand help; and __fish_seen_subcommand_from keys" -f -a "remove" -d 'Revoke an access key, by name or id'
complete -c infra -n "__fish_infra_using_subcommand help; and __fish_seen_subcommand_from providers" -f -a "add" -d 'Add an OpenID Connect identity provider'
complete -c infra -n "__fish_infra_using_subcommand help; and __fish_seen_subcommand_from providers" -f -a "list" -d 'List identity providers'
complete -c infra -n "__fish_infra_using_subcommand help; and __fish_seen_subcommand_from providers" -f -a "edit" -d 'Change a provider\'s URL, client id or secret'
complete -c infra -n "__fish_infra_using_subcommand help; and __fish_seen_subcommand_from providers" -f -a "remove" -d 'Remove a provider'
complete -c infra -n "__fish_infra_using_subcommand help; and __fish_seen_subcommand_from sessions" -f -a "list" -d 'List recorded sessions, newest first (everyone\'s for admins, else your own)'
complete -c infra -n "__fish_infra_using_subcommand help; and __fish_seen_subcommand_from sessions" -f -a "play" -d 'Play a session back in this terminal, at the pace it happened'
complete -c infra -n "__fish_infra_using_subcommand help; and __fish_seen_subcommand_from sessions" -f -a "export" -d 'Write a session\'s recording, an asciicast v2 file (`asciinema play FILE` plays it)'
complete -c infra -n "__fish_infra_using_subcommand help; and __fish_seen_subcommand_from identities" -f -a "add" -d 'Add a machine identity'
complete -c infra -n "__fish_infra_using_subcommand help; and __fish_seen_subcommand_from identities" -f -a "list" -d 'List machine identities'
complete -c infra -n "__fish_infra_using_subcommand help; and __fish_seen_subcommand_from identities" -f -a "remove" -d 'Remove a machine identity, with its grants and access tokens'
complete -c infra -n "__fish_infra_using_subcommand help; and __fish_seen_subcommand_from identities" -f -a "oidc-auth" -d 'How an identity logs in with its workload\'s OIDC JWT'
complete -c infra -n "__fish_infra_using_subcommand help; and __fish_seen_subcommand_from access" -f -a "explain" -d 'Explain a user\'s access to a destination: groups, grants, RBAC bindings'
complete -c infra -n "__fish_infra_using_subcommand help; and __fish_seen_subcommand_from tokens" -f -a "create" -d 'Print a credential for a cluster (kubectl runs this; see `infra login`)'
