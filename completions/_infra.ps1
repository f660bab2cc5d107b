
using namespace System.Management.Automation
using namespace System.Management.Automation.Language

Register-ArgumentCompleter -Native -CommandName 'infra' -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)

    $commandElements = $commandAst.CommandElements
    $command = @(
        'infra'
        for ($i = 1; $i -lt $commandElements.Count; $i++) {
            $element = $commandElements[$i]
            if ($element -isnot [StringConstantExpressionAst] -or
                $element.StringConstantType -ne [StringConstantType]::BareWord -or
                $element.Value.StartsWith('-') -or
                $element.Value -eq $wordToComplete) {
                break
        }
        $element.Value
    }) -join ';'

    $completions = @(switch ($command) {
        'infra' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('login', 'login', [CompletionResultType]::ParameterValue, 'Log in to an infra server')
            [CompletionResult]::new('logout', 'logout', [CompletionResultType]::ParameterValue, 'Log out: revoke the access key and forget it on this machine')
            [CompletionResult]::new('status', 'status', [CompletionResultType]::ParameterValue, 'Show where you are logged in and whether each key still works')
            [CompletionResult]::new('whoami', 'whoami', [CompletionResultType]::ParameterValue, 'Show whom you are logged in as, and your access to a destination')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List the clusters and namespaces you can reach, with your roles')
            [CompletionResult]::new('use', 'use', [CompletionResultType]::ParameterValue, 'Switch kubectl to a cluster (or a namespace in it) you can reach')
            [CompletionResult]::new('users', 'users', [CompletionResultType]::ParameterValue, 'Manage users (admins)')
            [CompletionResult]::new('groups', 'groups', [CompletionResultType]::ParameterValue, 'Manage groups and their members (admins)')
            [CompletionResult]::new('grants', 'grants', [CompletionResultType]::ParameterValue, 'Manage grants: who may do what where')
            [CompletionResult]::new('destinations', 'destinations', [CompletionResultType]::ParameterValue, 'List and remove destinations (clusters)')
            [CompletionResult]::new('keys', 'keys', [CompletionResultType]::ParameterValue, 'Manage access keys')
            [CompletionResult]::new('providers', 'providers', [CompletionResultType]::ParameterValue, 'Manage identity providers (admins)')
            [CompletionResult]::new('audit', 'audit', [CompletionResultType]::ParameterValue, 'Show the audit log (admins)')
            [CompletionResult]::new('sessions', 'sessions', [CompletionResultType]::ParameterValue, 'Recorded exec and attach sessions: list, play back, export')
            [CompletionResult]::new('identities', 'identities', [CompletionResultType]::ParameterValue, 'Manage machine identities and their OIDC JWT logins (admins)')
            [CompletionResult]::new('access', 'access', [CompletionResultType]::ParameterValue, 'Explain access: who may do what where, and why')
            [CompletionResult]::new('tokens', 'tokens', [CompletionResultType]::ParameterValue, 'Credentials for clusters: kubectl''s exec plugin')
            [CompletionResult]::new('server', 'server', [CompletionResultType]::ParameterValue, 'Run the infra API server')
            [CompletionResult]::new('connector', 'connector', [CompletionResultType]::ParameterValue, 'Run the connector next to a cluster''s API server')
            [CompletionResult]::new('completion', 'completion', [CompletionResultType]::ParameterValue, 'Print the completion script for a shell')
            [CompletionResult]::new('version', 'version', [CompletionResultType]::ParameterValue, 'Print the CLI''s version and the server''s')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'infra;login' {
            [CompletionResult]::new('--key', '--key', [CompletionResultType]::ParameterName, 'Log in with an access key (`-`: read it from standard input)')
            [CompletionResult]::new('--access-key-file', '--access-key-file', [CompletionResultType]::ParameterName, 'Log in with the access key in this file (`-`: standard input): kept out of `ps`')
            [CompletionResult]::new('--user', '--user', [CompletionResultType]::ParameterName, 'Log in as a local user (password prompted, or INFRA_PASSWORD)')
            [CompletionResult]::new('--tls-trusted-fingerprint', '--tls-trusted-fingerprint', [CompletionResultType]::ParameterName, 'Trust the server''s certificate with this SHA-256 fingerprint (or INFRA_TLS_TRUSTED_FINGERPRINT)')
            [CompletionResult]::new('--tls-trusted-cert', '--tls-trusted-cert', [CompletionResultType]::ParameterName, 'Trust the server''s certificate (or its CA) from this PEM file (or INFRA_TLS_TRUSTED_CERT)')
            [CompletionResult]::new('--provider', '--provider', [CompletionResultType]::ParameterName, 'Sign in with this identity provider (when the server has several)')
            [CompletionResult]::new('--listen-port', '--listen-port', [CompletionResultType]::ParameterName, 'Local port for the provider''s redirect (register http://localhost:PORT with it)')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'How long to wait for the browser sign-in')
            [CompletionResult]::new('--method', '--method', [CompletionResultType]::ParameterName, 'Log in another way: oidc-auth (a machine identity, with its workload''s OIDC JWT)')
            [CompletionResult]::new('--machine-identity-id', '--machine-identity-id', [CompletionResultType]::ParameterName, 'With --method=oidc-auth: the machine identity''s id or name')
            [CompletionResult]::new('--oidc-jwt', '--oidc-jwt', [CompletionResultType]::ParameterName, 'With --method=oidc-auth: the workload''s OIDC JWT (or INFRA_OIDC_JWT)')
            [CompletionResult]::new('--skip-tls-verify', '--skip-tls-verify', [CompletionResultType]::ParameterName, 'Do not verify the server''s certificate (unsafe)')
            [CompletionResult]::new('--no-browser', '--no-browser', [CompletionResultType]::ParameterName, 'Print the sign-in URL instead of opening a browser')
            [CompletionResult]::new('--device', '--device', [CompletionResultType]::ParameterName, 'Sign in on another device (a phone, a laptop) with a code: for machines without a browser')
            [CompletionResult]::new('--reauth', '--reauth', [CompletionResultType]::ParameterName, 'Ask the identity provider to authenticate you again, even if it still holds a session: for grants that ask for a recent sign-in (--max-auth-age)')
            [CompletionResult]::new('--silent', '--silent', [CompletionResultType]::ParameterName, 'With --method=oidc-auth: print nothing on stderr when it works')
            [CompletionResult]::new('--plain', '--plain', [CompletionResultType]::ParameterName, 'With --method=oidc-auth: print only the access token on stdout and keep it nowhere')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'infra;logout' {
            [CompletionResult]::new('--all', '--all', [CompletionResultType]::ParameterName, 'Log out of every server')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'infra;status' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server to use (default: the one you logged in to last)')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format [default: table on a terminal, plain otherwise]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'infra;whoami' {
            [CompletionResult]::new('--destination', '--destination', [CompletionResultType]::ParameterName, 'Explain your access to this destination (DEST or DEST.NAMESPACE)')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format [default: table on a terminal, plain otherwise]')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server to use (default: the one you logged in to last)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'infra;list' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server to use (default: the one you logged in to last)')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format [default: table on a terminal, plain otherwise]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'infra;use' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server to use (default: the one you logged in to last)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'infra;users' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('add', 'add', [CompletionResultType]::ParameterValue, 'Add a user')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List users')
            [CompletionResult]::new('edit', 'edit', [CompletionResultType]::ParameterValue, 'Change a local user''s password (yours: give the current one first)')
            [CompletionResult]::new('remove', 'remove', [CompletionResultType]::ParameterValue, 'Remove a user, with their grants and keys')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'infra;users;add' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server to use (default: the one you logged in to last)')
            [CompletionResult]::new('--password', '--password', [CompletionResultType]::ParameterName, 'Set a password (prompted on a terminal, else one line of stdin)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'infra;users;list' {
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format [default: table on a terminal, plain otherwise]')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server to use (default: the one you logged in to last)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'infra;users;edit' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server to use (default: the one you logged in to last)')
            [CompletionResult]::new('--password', '--password', [CompletionResultType]::ParameterName, 'Set a new password (prompted on a terminal, else one line of stdin)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'infra;users;remove' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server to use (default: the one you logged in to last)')
            [CompletionResult]::new('--force', '--force', [CompletionResultType]::ParameterName, 'Succeed even if the user does not exist')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'infra;users;help' {
            [CompletionResult]::new('add', 'add', [CompletionResultType]::ParameterValue, 'Add a user')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List users')
            [CompletionResult]::new('edit', 'edit', [CompletionResultType]::ParameterValue, 'Change a local user''s password (yours: give the current one first)')
            [CompletionResult]::new('remove', 'remove', [CompletionResultType]::ParameterValue, 'Remove a user, with their grants and keys')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'infra;users;help;add' {
            break
        }
        'infra;users;help;list' {
            break
        }
        'infra;users;help;edit' {
            break
        }
        'infra;users;help;remove' {
            break
        }
        'infra;users;help;help' {
            break
        }
        'infra;groups' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('add', 'add', [CompletionResultType]::ParameterValue, 'Add a group')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List groups')
            [CompletionResult]::new('remove', 'remove', [CompletionResultType]::ParameterValue, 'Remove a group and its grants')
            [CompletionResult]::new('adduser', 'adduser', [CompletionResultType]::ParameterValue, 'Add a user to a group')
            [CompletionResult]::new('removeuser', 'removeuser', [CompletionResultType]::ParameterValue, 'Remove a user from a group')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'infra;groups;add' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server to use (default: the one you logged in to last)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'infra;groups;list' {
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format [default: table on a terminal, plain otherwise]')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server to use (default: the one you logged in to last)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'infra;groups;remove' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server to use (default: the one you logged in to last)')
            [CompletionResult]::new('--force', '--force', [CompletionResultType]::ParameterName, 'Succeed even if the group does not exist')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'infra;groups;adduser' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server to use (default: the one you logged in to last)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'infra;groups;removeuser' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server to use (default: the one you logged in to last)')
            [CompletionResult]::new('--force', '--force', [CompletionResultType]::ParameterName, 'Succeed even if the user or group does not exist')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'infra;groups;help' {
            [CompletionResult]::new('add', 'add', [CompletionResultType]::ParameterValue, 'Add a group')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List groups')
            [CompletionResult]::new('remove', 'remove', [CompletionResultType]::ParameterValue, 'Remove a group and its grants')
            [CompletionResult]::new('adduser', 'adduser', [CompletionResultType]::ParameterValue, 'Add a user to a group')
            [CompletionResult]::new('removeuser', 'removeuser', [CompletionResultType]::ParameterValue, 'Remove a user from a group')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'infra;groups;help;add' {
            break
        }
        'infra;groups;help;list' {
            break
        }
        'infra;groups;help;remove' {
            break
        }
        'infra;groups;help;adduser' {
            break
        }
        'infra;groups;help;removeuser' {
            break
        }
        'infra;groups;help;help' {
            break
        }
        'infra;grants' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('add', 'add', [CompletionResultType]::ParameterValue, 'Grant a role on a destination (or a namespace in it)')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List grants (yours, or everyone''s for admins)')
            [CompletionResult]::new('remove', 'remove', [CompletionResultType]::ParameterValue, 'Remove a grant')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'infra;grants;add' {
            [CompletionResult]::new('--user', '--user', [CompletionResultType]::ParameterName, 'A user, by name')
            [CompletionResult]::new('--group', '--group', [CompletionResultType]::ParameterName, 'A group, by name')
            [CompletionResult]::new('--identity', '--identity', [CompletionResultType]::ParameterName, 'A machine identity, by name')
            [CompletionResult]::new('--role', '--role', [CompletionResultType]::ParameterName, 'The role, e.g. view, edit, admin, cluster-admin')
            [CompletionResult]::new('--max-auth-age', '--max-auth-age', [CompletionResultType]::ParameterName, 'Ask for a sign-in at the identity provider within this long (e.g. 15m, at most 24h) before issuing a cluster token under this grant; `infra login SERVER --reauth` signs in again')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server to use (default: the one you logged in to last)')
            [CompletionResult]::new('--record-sessions', '--record-sessions', [CompletionResultType]::ParameterName, 'Record exec and attach sessions under this grant (`infra sessions list`); a session that cannot be recorded is refused')
            [CompletionResult]::new('--force', '--force', [CompletionResultType]::ParameterName, 'Succeed if the grant already exists')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'infra;grants;list' {
            [CompletionResult]::new('--user', '--user', [CompletionResultType]::ParameterName, 'A user, by name')
            [CompletionResult]::new('--group', '--group', [CompletionResultType]::ParameterName, 'A group, by name')
            [CompletionResult]::new('--identity', '--identity', [CompletionResultType]::ParameterName, 'A machine identity, by name')
            [CompletionResult]::new('--destination', '--destination', [CompletionResultType]::ParameterName, 'Only grants on this destination (and its namespaces)')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format [default: table on a terminal, plain otherwise]')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server to use (default: the one you logged in to last)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'infra;grants;remove' {
            [CompletionResult]::new('--user', '--user', [CompletionResultType]::ParameterName, 'A user, by name')
            [CompletionResult]::new('--group', '--group', [CompletionResultType]::ParameterName, 'A group, by name')
            [CompletionResult]::new('--identity', '--identity', [CompletionResultType]::ParameterName, 'A machine identity, by name')
            [CompletionResult]::new('--role', '--role', [CompletionResultType]::ParameterName, 'The role granted')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server to use (default: the one you logged in to last)')
            [CompletionResult]::new('--force', '--force', [CompletionResultType]::ParameterName, 'Succeed even if there is no such grant')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'infra;grants;help' {
            [CompletionResult]::new('add', 'add', [CompletionResultType]::ParameterValue, 'Grant a role on a destination (or a namespace in it)')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List grants (yours, or everyone''s for admins)')
            [CompletionResult]::new('remove', 'remove', [CompletionResultType]::ParameterValue, 'Remove a grant')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'infra;grants;help;add' {
            break
        }
        'infra;grants;help;list' {
            break
        }
        'infra;grants;help;remove' {
            break
        }
        'infra;grants;help;help' {
            break
        }
        'infra;destinations' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List destinations and whether their connectors are connected')
            [CompletionResult]::new('remove', 'remove', [CompletionResultType]::ParameterValue, 'Remove a destination')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'infra;destinations;list' {
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format [default: table on a terminal, plain otherwise]')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server to use (default: the one you logged in to last)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'infra;destinations;remove' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server to use (default: the one you logged in to last)')
            [CompletionResult]::new('--force', '--force', [CompletionResultType]::ParameterName, 'Succeed even if it does not exist')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'infra;destinations;help' {
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List destinations and whether their connectors are connected')
            [CompletionResult]::new('remove', 'remove', [CompletionResultType]::ParameterValue, 'Remove a destination')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'infra;destinations;help;list' {
            break
        }
        'infra;destinations;help;remove' {
            break
        }
        'infra;destinations;help;help' {
            break
        }
        'infra;keys' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('add', 'add', [CompletionResultType]::ParameterValue, 'Create an access key; it is printed once, on stdout')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List access keys (yours; admins: --user NAME or --all)')
            [CompletionResult]::new('remove', 'remove', [CompletionResultType]::ParameterValue, 'Revoke an access key, by name or id')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'infra;keys;add' {
            [CompletionResult]::new('--name', '--name', [CompletionResultType]::ParameterName, 'A name for the key')
            [CompletionResult]::new('--expiry', '--expiry', [CompletionResultType]::ParameterName, 'How long the key lasts, e.g. 720h or 30d')
            [CompletionResult]::new('--inactivity-timeout', '--inactivity-timeout', [CompletionResultType]::ParameterName, 'How long the key may go unused, e.g. 72h')
            [CompletionResult]::new('--user', '--user', [CompletionResultType]::ParameterName, 'Create the key for another user (admins)')
            [CompletionResult]::new('--destination', '--destination', [CompletionResultType]::ParameterName, 'With --connector: the one destination the key serves [default: --name]')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server to use (default: the one you logged in to last)')
            [CompletionResult]::new('--connector', '--connector', [CompletionResultType]::ParameterName, 'Create a key for a connector (admins)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'infra;keys;list' {
            [CompletionResult]::new('--user', '--user', [CompletionResultType]::ParameterName, 'Keys of this user (admins)')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format [default: table on a terminal, plain otherwise]')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server to use (default: the one you logged in to last)')
            [CompletionResult]::new('--all', '--all', [CompletionResultType]::ParameterName, 'Everyone''s keys (admins)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'infra;keys;remove' {
            [CompletionResult]::new('--user', '--user', [CompletionResultType]::ParameterName, 'Whose key (admins); default: yours')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server to use (default: the one you logged in to last)')
            [CompletionResult]::new('--force', '--force', [CompletionResultType]::ParameterName, 'Succeed even if there is no such key')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'infra;keys;help' {
            [CompletionResult]::new('add', 'add', [CompletionResultType]::ParameterValue, 'Create an access key; it is printed once, on stdout')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List access keys (yours; admins: --user NAME or --all)')
            [CompletionResult]::new('remove', 'remove', [CompletionResultType]::ParameterValue, 'Revoke an access key, by name or id')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'infra;keys;help;add' {
            break
        }
        'infra;keys;help;list' {
            break
        }
        'infra;keys;help;remove' {
            break
        }
        'infra;keys;help;help' {
            break
        }
        'infra;providers' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('add', 'add', [CompletionResultType]::ParameterValue, 'Add an OpenID Connect identity provider')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List identity providers')
            [CompletionResult]::new('edit', 'edit', [CompletionResultType]::ParameterValue, 'Change a provider''s URL, client id or secret')
            [CompletionResult]::new('remove', 'remove', [CompletionResultType]::ParameterValue, 'Remove a provider')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'infra;providers;add' {
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'The provider''s issuer URL (a bare domain means https)')
            [CompletionResult]::new('--client-id', '--client-id', [CompletionResultType]::ParameterName, 'The client id of the application registered at the provider')
            [CompletionResult]::new('--client-secret', '--client-secret', [CompletionResultType]::ParameterName, 'The client secret (or INFRA_PROVIDER_CLIENT_SECRET)')
            [CompletionResult]::new('--kind', '--kind', [CompletionResultType]::ParameterName, 'oidc, okta, azure, google, gitlab, dex or keycloak')
            [CompletionResult]::new('--ca-file', '--ca-file', [CompletionResultType]::ParameterName, 'PEM file with the provider''s CA, when it is not publicly trusted')
            [CompletionResult]::new('--username-claim', '--username-claim', [CompletionResultType]::ParameterName, 'The claim that names users, e.g. preferred_username (Dex, Keycloak, GitLab) [default: the verified email]')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server to use (default: the one you logged in to last)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'infra;providers;list' {
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format [default: table on a terminal, plain otherwise]')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server to use (default: the one you logged in to last)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'infra;providers;edit' {
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'A new issuer URL')
            [CompletionResult]::new('--client-id', '--client-id', [CompletionResultType]::ParameterName, 'A new client id')
            [CompletionResult]::new('--client-secret', '--client-secret', [CompletionResultType]::ParameterName, 'A new client secret (or INFRA_PROVIDER_CLIENT_SECRET)')
            [CompletionResult]::new('--ca-file', '--ca-file', [CompletionResultType]::ParameterName, 'PEM file with the provider''s CA')
            [CompletionResult]::new('--username-claim', '--username-claim', [CompletionResultType]::ParameterName, 'The claim that names new users, e.g. preferred_username; "email" goes back to the verified email')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server to use (default: the one you logged in to last)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'infra;providers;remove' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server to use (default: the one you logged in to last)')
            [CompletionResult]::new('--force', '--force', [CompletionResultType]::ParameterName, 'Succeed even if it does not exist')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'infra;providers;help' {
            [CompletionResult]::new('add', 'add', [CompletionResultType]::ParameterValue, 'Add an OpenID Connect identity provider')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List identity providers')
            [CompletionResult]::new('edit', 'edit', [CompletionResultType]::ParameterValue, 'Change a provider''s URL, client id or secret')
            [CompletionResult]::new('remove', 'remove', [CompletionResultType]::ParameterValue, 'Remove a provider')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'infra;providers;help;add' {
            break
        }
        'infra;providers;help;list' {
            break
        }
        'infra;providers;help;edit' {
            break
        }
        'infra;providers;help;remove' {
            break
        }
        'infra;providers;help;help' {
            break
        }
        'infra;audit' {
            [CompletionResult]::new('--action', '--action', [CompletionResultType]::ParameterName, 'Only this action (e.g. grant.create, login, destination.register)')
            [CompletionResult]::new('--actor', '--actor', [CompletionResultType]::ParameterName, 'Only entries by this actor (a user or identity name)')
            [CompletionResult]::new('--since', '--since', [CompletionResultType]::ParameterName, 'Only entries at or after this time: RFC 3339, a date (2026-12-01), or "2026-12-01 10:00" (UTC)')
            [CompletionResult]::new('--until', '--until', [CompletionResultType]::ParameterName, 'Only entries before this time, in the same forms (a date includes that day)')
            [CompletionResult]::new('--limit', '--limit', [CompletionResultType]::ParameterName, 'At most this many entries, newest first')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format [default: table on a terminal, plain otherwise]')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server to use (default: the one you logged in to last)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'infra;sessions' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List recorded sessions, newest first (everyone''s for admins, else your own)')
            [CompletionResult]::new('play', 'play', [CompletionResultType]::ParameterValue, 'Play a session back in this terminal, at the pace it happened')
            [CompletionResult]::new('export', 'export', [CompletionResultType]::ParameterValue, 'Write a session''s recording, an asciicast v2 file (`asciinema play FILE` plays it)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'infra;sessions;list' {
            [CompletionResult]::new('--user', '--user', [CompletionResultType]::ParameterName, 'Only this user''s sessions (admins)')
            [CompletionResult]::new('--destination', '--destination', [CompletionResultType]::ParameterName, 'Only sessions on this destination')
            [CompletionResult]::new('--limit', '--limit', [CompletionResultType]::ParameterName, 'At most this many sessions')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format [default: table on a terminal, plain otherwise]')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server to use (default: the one you logged in to last)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'infra;sessions;play' {
            [CompletionResult]::new('--speed', '--speed', [CompletionResultType]::ParameterName, 'Play this many times faster (0.5 plays at half speed)')
            [CompletionResult]::new('--idle-limit', '--idle-limit', [CompletionResultType]::ParameterName, 'Shorten every pause to at most this long')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server to use (default: the one you logged in to last)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'infra;sessions;export' {
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Write here instead of to standard output')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Write here instead of to standard output')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server to use (default: the one you logged in to last)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'infra;sessions;help' {
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List recorded sessions, newest first (everyone''s for admins, else your own)')
            [CompletionResult]::new('play', 'play', [CompletionResultType]::ParameterValue, 'Play a session back in this terminal, at the pace it happened')
            [CompletionResult]::new('export', 'export', [CompletionResultType]::ParameterValue, 'Write a session''s recording, an asciicast v2 file (`asciinema play FILE` plays it)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'infra;sessions;help;list' {
            break
        }
        'infra;sessions;help;play' {
            break
        }
        'infra;sessions;help;export' {
            break
        }
        'infra;sessions;help;help' {
            break
        }
        'infra;identities' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('add', 'add', [CompletionResultType]::ParameterValue, 'Add a machine identity')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List machine identities')
            [CompletionResult]::new('remove', 'remove', [CompletionResultType]::ParameterValue, 'Remove a machine identity, with its grants and access tokens')
            [CompletionResult]::new('oidc-auth', 'oidc-auth', [CompletionResultType]::ParameterValue, 'How an identity logs in with its workload''s OIDC JWT')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'infra;identities;add' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server to use (default: the one you logged in to last)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'infra;identities;list' {
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format [default: table on a terminal, plain otherwise]')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server to use (default: the one you logged in to last)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'infra;identities;remove' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server to use (default: the one you logged in to last)')
            [CompletionResult]::new('--force', '--force', [CompletionResultType]::ParameterName, 'Succeed even if it does not exist')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'infra;identities;oidc-auth' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('set', 'set', [CompletionResultType]::ParameterValue, 'Set (replace) the identity''s oidc-auth configuration')
            [CompletionResult]::new('show', 'show', [CompletionResultType]::ParameterValue, 'Show the identity''s oidc-auth configuration')
            [CompletionResult]::new('remove', 'remove', [CompletionResultType]::ParameterValue, 'Remove the identity''s oidc-auth configuration and revoke the access tokens it issued')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'infra;identities;oidc-auth;set' {
            [CompletionResult]::new('--discovery-url', '--discovery-url', [CompletionResultType]::ParameterName, 'The issuer''s URL, or the full URL of its discovery document')
            [CompletionResult]::new('--issuer', '--issuer', [CompletionResultType]::ParameterName, 'The JWTs'' iss, exactly')
            [CompletionResult]::new('--ca-cert', '--ca-cert', [CompletionResultType]::ParameterName, 'PEM file with the CA of the issuer''s certificate, when it is not publicly trusted')
            [CompletionResult]::new('--subject', '--subject', [CompletionResultType]::ParameterName, 'Pattern the JWT''s sub must match')
            [CompletionResult]::new('--audiences', '--audiences', [CompletionResultType]::ParameterName, 'Patterns one of which the JWT''s aud must match (comma-separated)')
            [CompletionResult]::new('--claims', '--claims', [CompletionResultType]::ParameterName, 'Claims the JWT must carry, NAME=PATTERN (comma-separated or repeated)')
            [CompletionResult]::new('--access-token-ttl', '--access-token-ttl', [CompletionResultType]::ParameterName, 'How long an access token lasts, and how much each renewal adds')
            [CompletionResult]::new('--access-token-max-ttl', '--access-token-max-ttl', [CompletionResultType]::ParameterName, 'How long after login an access token can be renewed up to')
            [CompletionResult]::new('--access-token-max-uses', '--access-token-max-uses', [CompletionResultType]::ParameterName, 'How many requests an access token may make (0: unlimited)')
            [CompletionResult]::new('--access-token-trusted-ips', '--access-token-trusted-ips', [CompletionResultType]::ParameterName, 'Where the login and the access token may be used from (CIDRs, comma-separated)')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server to use (default: the one you logged in to last)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'infra;identities;oidc-auth;show' {
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format [default: table on a terminal, plain otherwise]')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server to use (default: the one you logged in to last)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'infra;identities;oidc-auth;remove' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server to use (default: the one you logged in to last)')
            [CompletionResult]::new('--force', '--force', [CompletionResultType]::ParameterName, 'Succeed even if there is none')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'infra;identities;oidc-auth;help' {
            [CompletionResult]::new('set', 'set', [CompletionResultType]::ParameterValue, 'Set (replace) the identity''s oidc-auth configuration')
            [CompletionResult]::new('show', 'show', [CompletionResultType]::ParameterValue, 'Show the identity''s oidc-auth configuration')
            [CompletionResult]::new('remove', 'remove', [CompletionResultType]::ParameterValue, 'Remove the identity''s oidc-auth configuration and revoke the access tokens it issued')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'infra;identities;oidc-auth;help;set' {
            break
        }
        'infra;identities;oidc-auth;help;show' {
            break
        }
        'infra;identities;oidc-auth;help;remove' {
            break
        }
        'infra;identities;oidc-auth;help;help' {
            break
        }
        'infra;identities;help' {
            [CompletionResult]::new('add', 'add', [CompletionResultType]::ParameterValue, 'Add a machine identity')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List machine identities')
            [CompletionResult]::new('remove', 'remove', [CompletionResultType]::ParameterValue, 'Remove a machine identity, with its grants and access tokens')
            [CompletionResult]::new('oidc-auth', 'oidc-auth', [CompletionResultType]::ParameterValue, 'How an identity logs in with its workload''s OIDC JWT')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'infra;identities;help;add' {
            break
        }
        'infra;identities;help;list' {
            break
        }
        'infra;identities;help;remove' {
            break
        }
        'infra;identities;help;oidc-auth' {
            [CompletionResult]::new('set', 'set', [CompletionResultType]::ParameterValue, 'Set (replace) the identity''s oidc-auth configuration')
            [CompletionResult]::new('show', 'show', [CompletionResultType]::ParameterValue, 'Show the identity''s oidc-auth configuration')
            [CompletionResult]::new('remove', 'remove', [CompletionResultType]::ParameterValue, 'Remove the identity''s oidc-auth configuration and revoke the access tokens it issued')
            break
        }
        'infra;identities;help;oidc-auth;set' {
            break
        }
        'infra;identities;help;oidc-auth;show' {
            break
        }
        'infra;identities;help;oidc-auth;remove' {
            break
        }
        'infra;identities;help;help' {
            break
        }
        'infra;access' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('explain', 'explain', [CompletionResultType]::ParameterValue, 'Explain a user''s access to a destination: groups, grants, RBAC bindings')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'infra;access;explain' {
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format [default: table on a terminal, plain otherwise]')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server to use (default: the one you logged in to last)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'infra;access;help' {
            [CompletionResult]::new('explain', 'explain', [CompletionResultType]::ParameterValue, 'Explain a user''s access to a destination: groups, grants, RBAC bindings')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'infra;access;help;explain' {
            break
        }
        'infra;access;help;help' {
            break
        }
        'infra;tokens' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Print a credential for a cluster (kubectl runs this; see `infra login`)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'infra;tokens;create' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'The server: host, host:port or https URL (default: the current one)')
            [CompletionResult]::new('--destination', '--destination', [CompletionResultType]::ParameterName, 'The destination (cluster) to get a token for')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'infra;tokens;help' {
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Print a credential for a cluster (kubectl runs this; see `infra login`)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'infra;tokens;help;create' {
            break
        }
        'infra;tokens;help;help' {
            break
        }
        'infra;server' {
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'How to write logs: text, or json (one object per line)')
            [CompletionResult]::new('--listen', '--listen', [CompletionResultType]::ParameterName, 'Address to serve HTTPS on')
            [CompletionResult]::new('--tls-cert', '--tls-cert', [CompletionResultType]::ParameterName, 'PEM certificate to serve (default: a self-signed one kept in the data dir)')
            [CompletionResult]::new('--tls-key', '--tls-key', [CompletionResultType]::ParameterName, 'PEM private key for --tls-cert')
            [CompletionResult]::new('--data-dir', '--data-dir', [CompletionResultType]::ParameterName, 'Where the server keeps its SQLite store, certificate and root key')
            [CompletionResult]::new('--db', '--db', [CompletionResultType]::ParameterName, 'PostgreSQL URL (postgres://USER:PASS@HOST/DB); default: SQLite in the data dir')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'YAML file that declares providers, users, groups, grants and an admin key')
            [CompletionResult]::new('--root-key-file', '--root-key-file', [CompletionResultType]::ParameterName, 'File with the key that encrypts secrets at rest (default: root.key in the data dir)')
            [CompletionResult]::new('--session-expiry', '--session-expiry', [CompletionResultType]::ParameterName, 'How long a key issued at login lasts')
            [CompletionResult]::new('--session-inactivity-timeout', '--session-inactivity-timeout', [CompletionResultType]::ParameterName, 'How long a key issued at login may go unused')
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'The server''s public URL: the issuer of cluster tokens (default: https://LISTEN-ADDRESS)')
            [CompletionResult]::new('--token-ttl', '--token-ttl', [CompletionResultType]::ParameterName, 'How long a cluster token lasts')
            [CompletionResult]::new('--idp-revalidate-interval', '--idp-revalidate-interval', [CompletionResultType]::ParameterName, 'Re-check a user with their identity provider when the last check is older than this')
            [CompletionResult]::new('--signing-key-rotation', '--signing-key-rotation', [CompletionResultType]::ParameterName, 'How often the token signing key is replaced')
            [CompletionResult]::new('--oidc-issuer-url', '--oidc-issuer-url', [CompletionResultType]::ParameterName, 'Register this OpenID provider at start (its issuer URL)')
            [CompletionResult]::new('--oidc-issuer-client-id', '--oidc-issuer-client-id', [CompletionResultType]::ParameterName, 'The client id registered at --oidc-issuer-url')
            [CompletionResult]::new('--oidc-issuer-client-secret', '--oidc-issuer-client-secret', [CompletionResultType]::ParameterName, 'The client secret registered at --oidc-issuer-url')
            [CompletionResult]::new('--oidc-username-claim', '--oidc-username-claim', [CompletionResultType]::ParameterName, 'The claim that names users of the --oidc-issuer-url provider, e.g. preferred_username [default: the verified email]')
            [CompletionResult]::new('--oidc-ca-file', '--oidc-ca-file', [CompletionResultType]::ParameterName, 'PEM file with the CA of --oidc-issuer-url, when it is not publicly trusted')
            [CompletionResult]::new('--oidc-provider-name', '--oidc-provider-name', [CompletionResultType]::ParameterName, 'The name of the provider registered from the --oidc-issuer-* flags')
            [CompletionResult]::new('--oidc-callback-url', '--oidc-callback-url', [CompletionResultType]::ParameterName, 'The public URL of the server''s web sign-in callback (behind a proxy)')
            [CompletionResult]::new('--device-code-ttl', '--device-code-ttl', [CompletionResultType]::ParameterName, 'How long a device code (`infra login --device`) waits for approval')
            [CompletionResult]::new('--device-poll-interval', '--device-poll-interval', [CompletionResultType]::ParameterName, 'How often a device may poll for its sign-in at first')
            [CompletionResult]::new('--trusted-proxies', '--trusted-proxies', [CompletionResultType]::ParameterName, 'Load balancers and proxies (CIDR,…) whose X-Forwarded-For or PROXY header names the client')
            [CompletionResult]::new('--max-connections', '--max-connections', [CompletionResultType]::ParameterName, 'Connections open at once at most; more are closed at once')
            [CompletionResult]::new('--header-read-timeout', '--header-read-timeout', [CompletionResultType]::ParameterName, 'Time a client has for its TLS handshake and each request''s headers (also ends idle keep-alive)')
            [CompletionResult]::new('--idle-timeout', '--idle-timeout', [CompletionResultType]::ParameterName, 'Close a connection with no request in progress for this long (a watch, a long poll or an exec session is one in progress while it lasts)')
            [CompletionResult]::new('--metrics-listen', '--metrics-listen', [CompletionResultType]::ParameterName, 'Serve /metrics and /healthz over plain HTTP here (keep it private); "off" for none [default: 127.0.0.1:9464, skipped with a warning when taken]')
            [CompletionResult]::new('--request-timeout', '--request-timeout', [CompletionResultType]::ParameterName, 'Longest time a request may take, body included (long polls take up to 30s)')
            [CompletionResult]::new('--audit-retention', '--audit-retention', [CompletionResultType]::ParameterName, 'How long the audit log keeps an entry (0 keeps them forever)')
            [CompletionResult]::new('--session-retention', '--session-retention', [CompletionResultType]::ParameterName, 'How long recorded exec and attach sessions are kept (0 keeps them forever)')
            [CompletionResult]::new('--max-session-bytes', '--max-session-bytes', [CompletionResultType]::ParameterName, 'The largest a session''s recording may grow (bytes of asciicast); a connector that reaches it ends the session')
            [CompletionResult]::new('--audit-prune-interval', '--audit-prune-interval', [CompletionResultType]::ParameterName, 'How often old audit entries are removed (by one replica)')
            [CompletionResult]::new('--max-long-polls', '--max-long-polls', [CompletionResultType]::ParameterName, 'Connectors'' long polls one replica holds open at once (one per connector); beyond it, 503 with Retry-After')
            [CompletionResult]::new('--db-max-connections', '--db-max-connections', [CompletionResultType]::ParameterName, 'Database connections per replica [default: 8 for SQLite, 16 for PostgreSQL]')
            [CompletionResult]::new('--print-admin-key', '--print-admin-key', [CompletionResultType]::ParameterName, 'Print the first start''s admin access key, while it has not been used, and exit')
            [CompletionResult]::new('--dev', '--dev', [CompletionResultType]::ParameterName, 'Development mode: an embedded OpenID provider that signs in anyone (no real security)')
            [CompletionResult]::new('--ephemeral', '--ephemeral', [CompletionResultType]::ParameterName, 'Keep everything in a temporary directory, removed at exit')
            [CompletionResult]::new('--dev-allow-remote', '--dev-allow-remote', [CompletionResultType]::ParameterName, 'Let --dev listen on a non-loopback address (anyone who reaches it can sign in)')
            [CompletionResult]::new('--proxy-protocol', '--proxy-protocol', [CompletionResultType]::ParameterName, 'Read a PROXY protocol v2 header (before TLS) from --trusted-proxies')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'infra;connector' {
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'How to write logs: text, or json (one object per line)')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'The infra server''s URL (https://infra.example.com)')
            [CompletionResult]::new('--access-key', '--access-key', [CompletionResultType]::ParameterName, 'A connector access key (`infra keys add --connector`)')
            [CompletionResult]::new('--access-key-file', '--access-key-file', [CompletionResultType]::ParameterName, 'Read the connector access key from this file instead (kept out of `ps` and the environment)')
            [CompletionResult]::new('--name', '--name', [CompletionResultType]::ParameterName, 'The destination name users see (e.g. prod)')
            [CompletionResult]::new('--listen', '--listen', [CompletionResultType]::ParameterName, 'Address to serve on [default: 0.0.0.0:8443]')
            [CompletionResult]::new('--endpoint', '--endpoint', [CompletionResultType]::ParameterName, 'HOST:PORT users reach this connector at (written into their kubeconfig)')
            [CompletionResult]::new('--ca-cert', '--ca-cert', [CompletionResultType]::ParameterName, 'CA certificate (PEM) that signs the serving certificate [default: generated and kept]')
            [CompletionResult]::new('--ca-key', '--ca-key', [CompletionResultType]::ParameterName, 'The CA''s private key (PEM)')
            [CompletionResult]::new('--data-dir', '--data-dir', [CompletionResultType]::ParameterName, 'Where a generated CA is kept [default: the platform''s data dir]/infra-connector')
            [CompletionResult]::new('--kubeconfig', '--kubeconfig', [CompletionResultType]::ParameterName, 'Reach the cluster as a kubeconfig context does (outside a cluster: kind, minikube, k3d, …)')
            [CompletionResult]::new('--context', '--context', [CompletionResultType]::ParameterName, 'The kubeconfig''s context to use [default: its current context]')
            [CompletionResult]::new('--kube-api', '--kube-api', [CompletionResultType]::ParameterName, 'The Kubernetes API [default: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT]')
            [CompletionResult]::new('--kube-token-file', '--kube-token-file', [CompletionResultType]::ParameterName, 'The connector''s service-account token, re-read when it changes')
            [CompletionResult]::new('--kube-ca-file', '--kube-ca-file', [CompletionResultType]::ParameterName, 'The Kubernetes API''s CA (PEM)')
            [CompletionResult]::new('--server-ca-file', '--server-ca-file', [CompletionResultType]::ParameterName, 'Trust the infra server''s certificate from this PEM file')
            [CompletionResult]::new('--server-trusted-fingerprint', '--server-trusted-fingerprint', [CompletionResultType]::ParameterName, 'Trust the infra server''s certificate with this SHA-256 fingerprint')
            [CompletionResult]::new('--sync-rbac', '--sync-rbac', [CompletionResultType]::ParameterName, 'Keep Kubernetes RBAC bindings in step with infra''s grants')
            [CompletionResult]::new('--max-session-bytes', '--max-session-bytes', [CompletionResultType]::ParameterName, 'The largest a session''s recording may grow; a session that reaches it is ended')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'YAML file with any of these settings (camelCase keys)')
            [CompletionResult]::new('--heartbeat', '--heartbeat', [CompletionResultType]::ParameterName, 'How often to heartbeat to the server [default: 5m while the grants'' long poll tells the server the connector is alive, else 30s]')
            [CompletionResult]::new('--rbac-poll', '--rbac-poll', [CompletionResultType]::ParameterName, 'How often to retry grants that could not be applied yet')
            [CompletionResult]::new('--rbac-resync', '--rbac-resync', [CompletionResultType]::ParameterName, 'How often to reconcile every binding anyway (repairs hand edits)')
            [CompletionResult]::new('--leeway', '--leeway', [CompletionResultType]::ParameterName, 'Clock-skew leeway for token expiry, in seconds')
            [CompletionResult]::new('--metrics-listen', '--metrics-listen', [CompletionResultType]::ParameterName, 'Serve /healthz and /metrics over plain HTTP here (off the users'' port); "off" for none [default: 127.0.0.1:9465]')
            [CompletionResult]::new('--trusted-proxies', '--trusted-proxies', [CompletionResultType]::ParameterName, 'Load balancers and proxies (CIDR,…) whose X-Forwarded-For or PROXY header names the client')
            [CompletionResult]::new('--max-connections', '--max-connections', [CompletionResultType]::ParameterName, 'Connections open at once at most; more are closed at once')
            [CompletionResult]::new('--header-read-timeout', '--header-read-timeout', [CompletionResultType]::ParameterName, 'Time a client has for its TLS handshake and each request''s headers (also ends idle keep-alive)')
            [CompletionResult]::new('--idle-timeout', '--idle-timeout', [CompletionResultType]::ParameterName, 'Close a connection with no request in progress for this long (a watch, a long poll or an exec session is one in progress while it lasts)')
            [CompletionResult]::new('--server-skip-tls-verify', '--server-skip-tls-verify', [CompletionResultType]::ParameterName, 'Do not verify the infra server''s certificate (unsafe)')
            [CompletionResult]::new('--record-sessions', '--record-sessions', [CompletionResultType]::ParameterName, 'Record every exec and attach session through this connector (asciicast v2, kept by the server: `infra sessions list`); a session that cannot be recorded is refused. Grants may ask for it too (`infra grants add --record-sessions`)')
            [CompletionResult]::new('--proxy-protocol', '--proxy-protocol', [CompletionResultType]::ParameterName, 'Read a PROXY protocol v2 header (before TLS) from --trusted-proxies')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'infra;completion' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'infra;version' {
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Server to use (default: the one you logged in to last)')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format [default: table on a terminal, plain otherwise]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'infra;help' {
            [CompletionResult]::new('login', 'login', [CompletionResultType]::ParameterValue, 'Log in to an infra server')
            [CompletionResult]::new('logout', 'logout', [CompletionResultType]::ParameterValue, 'Log out: revoke the access key and forget it on this machine')
            [CompletionResult]::new('status', 'status', [CompletionResultType]::ParameterValue, 'Show where you are logged in and whether each key still works')
            [CompletionResult]::new('whoami', 'whoami', [CompletionResultType]::ParameterValue, 'Show whom you are logged in as, and your access to a destination')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List the clusters and namespaces you can reach, with your roles')
            [CompletionResult]::new('use', 'use', [CompletionResultType]::ParameterValue, 'Switch kubectl to a cluster (or a namespace in it) you can reach')
            [CompletionResult]::new('users', 'users', [CompletionResultType]::ParameterValue, 'Manage users (admins)')
            [CompletionResult]::new('groups', 'groups', [CompletionResultType]::ParameterValue, 'Manage groups and their members (admins)')
            [CompletionResult]::new('grants', 'grants', [CompletionResultType]::ParameterValue, 'Manage grants: who may do what where')
            [CompletionResult]::new('destinations', 'destinations', [CompletionResultType]::ParameterValue, 'List and remove destinations (clusters)')
            [CompletionResult]::new('keys', 'keys', [CompletionResultType]::ParameterValue, 'Manage access keys')
            [CompletionResult]::new('providers', 'providers', [CompletionResultType]::ParameterValue, 'Manage identity providers (admins)')
            [CompletionResult]::new('audit', 'audit', [CompletionResultType]::ParameterValue, 'Show the audit log (admins)')
            [CompletionResult]::new('sessions', 'sessions', [CompletionResultType]::ParameterValue, 'Recorded exec and attach sessions: list, play back, export')
            [CompletionResult]::new('identities', 'identities', [CompletionResultType]::ParameterValue, 'Manage machine identities and their OIDC JWT logins (admins)')
            [CompletionResult]::new('access', 'access', [CompletionResultType]::ParameterValue, 'Explain access: who may do what where, and why')
            [CompletionResult]::new('tokens', 'tokens', [CompletionResultType]::ParameterValue, 'Credentials for clusters: kubectl''s exec plugin')
            [CompletionResult]::new('server', 'server', [CompletionResultType]::ParameterValue, 'Run the infra API server')
            [CompletionResult]::new('connector', 'connector', [CompletionResultType]::ParameterValue, 'Run the connector next to a cluster''s API server')
            [CompletionResult]::new('completion', 'completion', [CompletionResultType]::ParameterValue, 'Print the completion script for a shell')
            [CompletionResult]::new('version', 'version', [CompletionResultType]::ParameterValue, 'Print the CLI''s version and the server''s')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'infra;help;login' {
            break
        }
        'infra;help;logout' {
            break
        }
        'infra;help;status' {
            break
        }
        'infra;help;whoami' {
            break
        }
        'infra;help;list' {
            break
        }
        'infra;help;use' {
            break
        }
        'infra;help;users' {
            [CompletionResult]::new('add', 'add', [CompletionResultType]::ParameterValue, 'Add a user')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List users')
            [CompletionResult]::new('edit', 'edit', [CompletionResultType]::ParameterValue, 'Change a local user''s password (yours: give the current one first)')
            [CompletionResult]::new('remove', 'remove', [CompletionResultType]::ParameterValue, 'Remove a user, with their grants and keys')
            break
        }
        'infra;help;users;add' {
            break
        }
        'infra;help;users;list' {
            break
        }
        'infra;help;users;edit' {
            break
        }
        'infra;help;users;remove' {
            break
        }
        'infra;help;groups' {
            [CompletionResult]::new('add', 'add', [CompletionResultType]::ParameterValue, 'Add a group')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List groups')
            [CompletionResult]::new('remove', 'remove', [CompletionResultType]::ParameterValue, 'Remove a group and its grants')
            [CompletionResult]::new('adduser', 'adduser', [CompletionResultType]::ParameterValue, 'Add a user to a group')
            [CompletionResult]::new('removeuser', 'removeuser', [CompletionResultType]::ParameterValue, 'Remove a user from a group')
            break
        }
        'infra;help;groups;add' {
            break
        }
        'infra;help;groups;list' {
            break
        }
        'infra;help;groups;remove' {
            break
        }
        'infra;help;groups;adduser' {
            break
        }
        'infra;help;groups;removeuser' {
            break
        }
        'infra;help;grants' {
            [CompletionResult]::new('add', 'add', [CompletionResultType]::ParameterValue, 'Grant a role on a destination (or a namespace in it)')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List grants (yours, or everyone''s for admins)')
            [CompletionResult]::new('remove', 'remove', [CompletionResultType]::ParameterValue, 'Remove a grant')
            break
        }
        'infra;help;grants;add' {
            break
        }
        'infra;help;grants;list' {
            break
        }
        'infra;help;grants;remove' {
            break
        }
        'infra;help;destinations' {
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List destinations and whether their connectors are connected')
            [CompletionResult]::new('remove', 'remove', [CompletionResultType]::ParameterValue, 'Remove a destination')
            break
        }
        'infra;help;destinations;list' {
            break
        }
        'infra;help;destinations;remove' {
            break
        }
        'infra;help;keys' {
            [CompletionResult]::new('add', 'add', [CompletionResultType]::ParameterValue, 'Create an access key; it is printed once, on stdout')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List access keys (yours; admins: --user NAME or --all)')
            [CompletionResult]::new('remove', 'remove', [CompletionResultType]::ParameterValue, 'Revoke an access key, by name or id')
            break
        }
        'infra;help;keys;add' {
            break
        }
        'infra;help;keys;list' {
            break
        }
        'infra;help;keys;remove' {
            break
        }
        'infra;help;providers' {
            [CompletionResult]::new('add', 'add', [CompletionResultType]::ParameterValue, 'Add an OpenID Connect identity provider')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List identity providers')
            [CompletionResult]::new('edit', 'edit', [CompletionResultType]::ParameterValue, 'Change a provider''s URL, client id or secret')
            [CompletionResult]::new('remove', 'remove', [CompletionResultType]::ParameterValue, 'Remove a provider')
            break
        }
        'infra;help;providers;add' {
            break
        }
        'infra;help;providers;list' {
            break
        }
        'infra;help;providers;edit' {
            break
        }
        'infra;help;providers;remove' {
            break
        }
        'infra;help;audit' {
            break
        }
        'infra;help;sessions' {
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List recorded sessions, newest first (everyone''s for admins, else your own)')
            [CompletionResult]::new('play', 'play', [CompletionResultType]::ParameterValue, 'Play a session back in this terminal, at the pace it happened')
            [CompletionResult]::new('export', 'export', [CompletionResultType]::ParameterValue, 'Write a session''s recording, an asciicast v2 file (`asciinema play FILE` plays it)')
            break
        }
        'infra;help;sessions;list' {
            break
        }
        'infra;help;sessions;play' {
            break
        }
        'infra;help;sessions;export' {
            break
        }
        'infra;help;identities' {
            [CompletionResult]::new('add', 'add', [CompletionResultType]::ParameterValue, 'Add a machine identity')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List machine identities')
            [CompletionResult]::new('remove', 'remove', [CompletionResultType]::ParameterValue, 'Remove a machine identity, with its grants and access tokens')
            [CompletionResult]::new('oidc-auth', 'oidc-auth', [CompletionResultType]::ParameterValue, 'How an identity logs in with its workload''s OIDC JWT')
            break
        }
        'infra;help;identities;add' {
            break
        }
        'infra;help;identities;list' {
            break
        }
        'infra;help;identities;remove' {
            break
        }
        'infra;help;identities;oidc-auth' {
            [CompletionResult]::new('set', 'set', [CompletionResultType]::ParameterValue, 'Set (replace) the identity''s oidc-auth configuration')
            [CompletionResult]::new('show', 'show', [CompletionResultType]::ParameterValue, 'Show the identity''s oidc-auth configuration')
            [CompletionResult]::new('remove', 'remove', [CompletionResultType]::ParameterValue, 'Remove the identity''s oidc-auth configuration and revoke the access tokens it issued')
            break
        }
        'infra;help;identities;oidc-auth;set' {
            break
        }
        'infra;help;identities;oidc-auth;show' {
            break
        }
        'infra;help;identities;oidc-auth;remove' {
            break
        }
        'infra;help;access' {
            [CompletionResult]::new('explain', 'explain', [CompletionResultType]::ParameterValue, 'Explain a user''s access to a destination: groups, grants, RBAC bindings')
            break
        }
        'infra;help;access;explain' {
            break
        }
        'infra;help;tokens' {
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Print a credential for a cluster (kubectl runs this; see `infra login`)')
            break
        }
        'infra;help;tokens;create' {
            break
        }
        'infra;help;server' {
            break
        }
        'infra;help;connector' {
            break
        }
        'infra;help;completion' {
            break
        }
        'infra;help;version' {
            break
        }
        'infra;help;help' {
            break
        }
    })

    $completions.Where{ $_.CompletionText -like "$wordToComplete*" } |
        Sort-Object -Property ListItemText
}
