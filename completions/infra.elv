
use builtin;
use str;

set edit:completion:arg-completer[infra] = {|@words|
    fn spaces {|n|
        builtin:repeat $n ' ' | str:join ''
    }
    fn cand {|text desc|
        edit:complex-candidate $text &display=$text' '(spaces (- 14 (wcswidth $text)))$desc
    }
    var command = 'infra'
    for word $words[1..-1] {
        if (str:has-prefix $word '-') {
            break
        }
        set command = $command';'$word
    }
    var completions = [
        &'infra'= {
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
            cand login 'Log in to an infra server'
            cand logout 'Log out: revoke the access key and forget it on this machine'
            cand status 'Show where you are logged in and whether each key still works'
            cand whoami 'Show whom you are logged in as, and your access to a destination'
            cand list 'List the clusters and namespaces you can reach, with your roles'
            cand use 'Switch kubectl to a cluster (or a namespace in it) you can reach'
            cand users 'Manage users (admins)'
            cand groups 'Manage groups and their members (admins)'
            cand grants 'Manage grants: who may do what where'
            cand destinations 'List and remove destinations (clusters)'
            cand keys 'Manage access keys'
            cand providers 'Manage identity providers (admins)'
            cand audit 'Show the audit log (admins)'
            cand sessions 'Recorded exec and attach sessions: list, play back, export'
            cand identities 'Manage machine identities and their OIDC JWT logins (admins)'
            cand access 'Explain access: who may do what where, and why'
            cand tokens 'Credentials for clusters: kubectl''s exec plugin'
            cand server 'Run the infra API server'
            cand connector 'Run the connector next to a cluster''s API server'
            cand completion 'Print the completion script for a shell'
            cand version 'Print the CLI''s version and the server''s'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'infra;login'= {
            cand --key 'Log in with an access key (`-`: read it from standard input)'
            cand --access-key-file 'Log in with the access key in this file (`-`: standard input): kept out of `ps`'
            cand --user 'Log in as a local user (password prompted, or INFRA_PASSWORD)'
            cand --tls-trusted-fingerprint 'Trust the server''s certificate with this SHA-256 fingerprint (or INFRA_TLS_TRUSTED_FINGERPRINT)'
            cand --tls-trusted-cert 'Trust the server''s certificate (or its CA) from this PEM file (or INFRA_TLS_TRUSTED_CERT)'
            cand --provider 'Sign in with this identity provider (when the server has several)'
            cand --listen-port 'Local port for the provider''s redirect (register http://localhost:PORT with it)'
            cand --timeout 'How long to wait for the browser sign-in'
            cand --method 'Log in another way: oidc-auth (a machine identity, with its workload''s OIDC JWT)'
            cand --machine-identity-id 'With --method=oidc-auth: the machine identity''s id or name'
            cand --oidc-jwt 'With --method=oidc-auth: the workload''s OIDC JWT (or INFRA_OIDC_JWT)'
            cand --skip-tls-verify 'Do not verify the server''s certificate (unsafe)'
            cand --no-browser 'Print the sign-in URL instead of opening a browser'
            cand --device 'Sign in on another device (a phone, a laptop) with a code: for machines without a browser'
            cand --reauth 'Ask the identity provider to authenticate you again, even if it still holds a session: for grants that ask for a recent sign-in (--max-auth-age)'
            cand --silent 'With --method=oidc-auth: print nothing on stderr when it works'
            cand --plain 'With --method=oidc-auth: print only the access token on stdout and keep it nowhere'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'infra;logout'= {
            cand --all 'Log out of every server'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'infra;status'= {
            cand --server 'Server to use (default: the one you logged in to last)'
            cand --format 'Output format [default: table on a terminal, plain otherwise]'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'infra;whoami'= {
            cand --destination 'Explain your access to this destination (DEST or DEST.NAMESPACE)'
            cand --format 'Output format [default: table on a terminal, plain otherwise]'
            cand --server 'Server to use (default: the one you logged in to last)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'infra;list'= {
            cand --server 'Server to use (default: the one you logged in to last)'
            cand --format 'Output format [default: table on a terminal, plain otherwise]'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'infra;use'= {
            cand --server 'Server to use (default: the one you logged in to last)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'infra;users'= {
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand add 'Add a user'
            cand list 'List users'
            cand edit 'Change a local user''s password (yours: give the current one first)'
            cand remove 'Remove a user, with their grants and keys'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'infra;users;add'= {
            cand --server 'Server to use (default: the one you logged in to last)'
            cand --password 'Set a password (prompted on a terminal, else one line of stdin)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'infra;users;list'= {
            cand --format 'Output format [default: table on a terminal, plain otherwise]'
            cand --server 'Server to use (default: the one you logged in to last)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'infra;users;edit'= {
            cand --server 'Server to use (default: the one you logged in to last)'
            cand --password 'Set a new password (prompted on a terminal, else one line of stdin)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'infra;users;remove'= {
            cand --server 'Server to use (default: the one you logged in to last)'
            cand --force 'Succeed even if the user does not exist'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'infra;users;help'= {
            cand add 'Add a user'
            cand list 'List users'
            cand edit 'Change a local user''s password (yours: give the current one first)'
            cand remove 'Remove a user, with their grants and keys'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'infra;users;help;add'= {
        }
        &'infra;users;help;list'= {
        }
        &'infra;users;help;edit'= {
        }
        &'infra;users;help;remove'= {
        }
        &'infra;users;help;help'= {
        }
        &'infra;groups'= {
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand add 'Add a group'
            cand list 'List groups'
            cand remove 'Remove a group and its grants'
            cand adduser 'Add a user to a group'
            cand removeuser 'Remove a user from a group'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'infra;groups;add'= {
            cand --server 'Server to use (default: the one you logged in to last)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'infra;groups;list'= {
            cand --format 'Output format [default: table on a terminal, plain otherwise]'
            cand --server 'Server to use (default: the one you logged in to last)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'infra;groups;remove'= {
            cand --server 'Server to use (default: the one you logged in to last)'
            cand --force 'Succeed even if the group does not exist'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'infra;groups;adduser'= {
            cand --server 'Server to use (default: the one you logged in to last)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'infra;groups;removeuser'= {
            cand --server 'Server to use (default: the one you logged in to last)'
            cand --force 'Succeed even if the user or group does not exist'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'infra;groups;help'= {
            cand add 'Add a group'
            cand list 'List groups'
            cand remove 'Remove a group and its grants'
            cand adduser 'Add a user to a group'
            cand removeuser 'Remove a user from a group'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'infra;groups;help;add'= {
        }
        &'infra;groups;help;list'= {
        }
        &'infra;groups;help;remove'= {
        }
        &'infra;groups;help;adduser'= {
        }
        &'infra;groups;help;removeuser'= {
        }
        &'infra;groups;help;help'= {
        }
        &'infra;grants'= {
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand add 'Grant a role on a destination (or a namespace in it)'
            cand list 'List grants (yours, or everyone''s for admins)'
            cand remove 'Remove a grant'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'infra;grants;add'= {
            cand --user 'A user, by name'
            cand --group 'A group, by name'
            cand --identity 'A machine identity, by name'
            cand --role 'The role, e.g. view, edit, admin, cluster-admin'
            cand --max-auth-age 'Ask for a sign-in at the identity provider within this long (e.g. 15m, at most 24h) before issuing a cluster token under this grant; `infra login SERVER --reauth` signs in again'
            cand --server 'Server to use (default: the one you logged in to last)'
            cand --record-sessions 'Record exec and attach sessions under this grant (`infra sessions list`); a session that cannot be recorded is refused'
            cand --force 'Succeed if the grant already exists'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'infra;grants;list'= {
            cand --user 'A user, by name'
            cand --group 'A group, by name'
            cand --identity 'A machine identity, by name'
            cand --destination 'Only grants on this destination (and its namespaces)'
            cand --format 'Output format [default: table on a terminal, plain otherwise]'
            cand --server 'Server to use (default: the one you logged in to last)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'infra;grants;remove'= {
            cand --user 'A user, by name'
            cand --group 'A group, by name'
            cand --identity 'A machine identity, by name'
            cand --role 'The role granted'
            cand --server 'Server to use (default: the one you logged in to last)'
            cand --force 'Succeed even if there is no such grant'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'infra;grants;help'= {
            cand add 'Grant a role on a destination (or a namespace in it)'
            cand list 'List grants (yours, or everyone''s for admins)'
            cand remove 'Remove a grant'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'infra;grants;help;add'= {
        }
        &'infra;grants;help;list'= {
        }
        &'infra;grants;help;remove'= {
        }
        &'infra;grants;help;help'= {
        }
        &'infra;destinations'= {
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand list 'List destinations and whether their connectors are connected'
            cand remove 'Remove a destination'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'infra;destinations;list'= {
            cand --format 'Output format [default: table on a terminal, plain otherwise]'
            cand --server 'Server to use (default: the one you logged in to last)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'infra;destinations;remove'= {
            cand --server 'Server to use (default: the one you logged in to last)'
            cand --force 'Succeed even if it does not exist'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'infra;destinations;help'= {
            cand list 'List destinations and whether their connectors are connected'
            cand remove 'Remove a destination'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'infra;destinations;help;list'= {
        }
        &'infra;destinations;help;remove'= {
        }
        &'infra;destinations;help;help'= {
        }
        &'infra;keys'= {
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand add 'Create an access key; it is printed once, on stdout'
            cand list 'List access keys (yours; admins: --user NAME or --all)'
            cand remove 'Revoke an access key, by name or id'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'infra;keys;add'= {
            cand --name 'A name for the key'
            cand --expiry 'How long the key lasts, e.g. 720h or 30d'
            cand --inactivity-timeout 'How long the key may go unused, e.g. 72h'
            cand --user 'Create the key for another user (admins)'
            cand --destination 'With --connector: the one destination the key serves [default: --name]'
            cand --server 'Server to use (default: the one you logged in to last)'
            cand --connector 'Create a key for a connector (admins)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'infra;keys;list'= {
            cand --user 'Keys of this user (admins)'
            cand --format 'Output format [default: table on a terminal, plain otherwise]'
            cand --server 'Server to use (default: the one you logged in to last)'
            cand --all 'Everyone''s keys (admins)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'infra;keys;remove'= {
            cand --user 'Whose key (admins); default: yours'
            cand --server 'Server to use (default: the one you logged in to last)'
            cand --force 'Succeed even if there is no such key'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'infra;keys;help'= {
            cand add 'Create an access key; it is printed once, on stdout'
            cand list 'List access keys (yours; admins: --user NAME or --all)'
            cand remove 'Revoke an access key, by name or id'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'infra;keys;help;add'= {
        }
        &'infra;keys;help;list'= {
        }
        &'infra;keys;help;remove'= {
        }
        &'infra;keys;help;help'= {
        }
        &'infra;providers'= {
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand add 'Add an OpenID Connect identity provider'
            cand list 'List identity providers'
            cand edit 'Change a provider''s URL, client id or secret'
            cand remove 'Remove a provider'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'infra;providers;add'= {
            cand --url 'The provider''s issuer URL (a bare domain means https)'
            cand --client-id 'The client id of the application registered at the provider'
            cand --client-secret 'The client secret (or INFRA_PROVIDER_CLIENT_SECRET)'
            cand --kind 'oidc, okta, azure, google, gitlab, dex or keycloak'
            cand --ca-file 'PEM file with the provider''s CA, when it is not publicly trusted'
            cand --username-claim 'The claim that names users, e.g. preferred_username (Dex, Keycloak, GitLab) [default: the verified email]'
            cand --server 'Server to use (default: the one you logged in to last)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'infra;providers;list'= {
            cand --format 'Output format [default: table on a terminal, plain otherwise]'
            cand --server 'Server to use (default: the one you logged in to last)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'infra;providers;edit'= {
            cand --url 'A new issuer URL'
            cand --client-id 'A new client id'
            cand --client-secret 'A new client secret (or INFRA_PROVIDER_CLIENT_SECRET)'
            cand --ca-file 'PEM file with the provider''s CA'
            cand --username-claim 'The claim that names new users, e.g. preferred_username; "email" goes back to the verified email'
            cand --server 'Server to use (default: the one you logged in to last)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'infra;providers;remove'= {
            cand --server 'Server to use (default: the one you logged in to last)'
            cand --force 'Succeed even if it does not exist'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'infra;providers;help'= {
            cand add 'Add an OpenID Connect identity provider'
            cand list 'List identity providers'
            cand edit 'Change a provider''s URL, client id or secret'
            cand remove 'Remove a provider'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'infra;providers;help;add'= {
        }
        &'infra;providers;help;list'= {
        }
        &'infra;providers;help;edit'= {
        }
        &'infra;providers;help;remove'= {
        }
        &'infra;providers;help;help'= {
        }
        &'infra;audit'= {
            cand --action 'Only this action (e.g. grant.create, login, destination.register)'
            cand --actor 'Only entries by this actor (a user or identity name)'
            cand --since 'Only entries at or after this time: RFC 3339, a date (2026-12-01), or "2026-12-01 10:00" (UTC)'
            cand --until 'Only entries before this time, in the same forms (a date includes that day)'
            cand --limit 'At most this many entries, newest first'
            cand --format 'Output format [default: table on a terminal, plain otherwise]'
            cand --server 'Server to use (default: the one you logged in to last)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'infra;sessions'= {
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand list 'List recorded sessions, newest first (everyone''s for admins, else your own)'
            cand play 'Play a session back in this terminal, at the pace it happened'
            cand export 'Write a session''s recording, an asciicast v2 file (`asciinema play FILE` plays it)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'infra;sessions;list'= {
            cand --user 'Only this user''s sessions (admins)'
            cand --destination 'Only sessions on this destination'
            cand --limit 'At most this many sessions'
            cand --format 'Output format [default: table on a terminal, plain otherwise]'
            cand --server 'Server to use (default: the one you logged in to last)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'infra;sessions;play'= {
            cand --speed 'Play this many times faster (0.5 plays at half speed)'
            cand --idle-limit 'Shorten every pause to at most this long'
            cand --server 'Server to use (default: the one you logged in to last)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'infra;sessions;export'= {
            cand -o 'Write here instead of to standard output'
            cand --output 'Write here instead of to standard output'
            cand --server 'Server to use (default: the one you logged in to last)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'infra;sessions;help'= {
            cand list 'List recorded sessions, newest first (everyone''s for admins, else your own)'
            cand play 'Play a session back in this terminal, at the pace it happened'
            cand export 'Write a session''s recording, an asciicast v2 file (`asciinema play FILE` plays it)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'infra;sessions;help;list'= {
        }
        &'infra;sessions;help;play'= {
        }
        &'infra;sessions;help;export'= {
        }
        &'infra;sessions;help;help'= {
        }
        &'infra;identities'= {
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand add 'Add a machine identity'
            cand list 'List machine identities'
            cand remove 'Remove a machine identity, with its grants and access tokens'
            cand oidc-auth 'How an identity logs in with its workload''s OIDC JWT'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'infra;identities;add'= {
            cand --server 'Server to use (default: the one you logged in to last)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'infra;identities;list'= {
            cand --format 'Output format [default: table on a terminal, plain otherwise]'
            cand --server 'Server to use (default: the one you logged in to last)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'infra;identities;remove'= {
            cand --server 'Server to use (default: the one you logged in to last)'
            cand --force 'Succeed even if it does not exist'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'infra;identities;oidc-auth'= {
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand set 'Set (replace) the identity''s oidc-auth configuration'
            cand show 'Show the identity''s oidc-auth configuration'
            cand remove 'Remove the identity''s oidc-auth configuration and revoke the access tokens it issued'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'infra;identities;oidc-auth;set'= {
            cand --discovery-url 'The issuer''s URL, or the full URL of its discovery document'
            cand --issuer 'The JWTs'' iss, exactly'
            cand --ca-cert 'PEM file with the CA of the issuer''s certificate, when it is not publicly trusted'
            cand --subject 'Pattern the JWT''s sub must match'
            cand --audiences 'Patterns one of which the JWT''s aud must match (comma-separated)'
            cand --claims 'Claims the JWT must carry, NAME=PATTERN (comma-separated or repeated)'
            cand --access-token-ttl 'How long an access token lasts, and how much each renewal adds'
            cand --access-token-max-ttl 'How long after login an access token can be renewed up to'
            cand --access-token-max-uses 'How many requests an access token may make (0: unlimited)'
            cand --access-token-trusted-ips 'Where the login and the access token may be used from (CIDRs, comma-separated)'
            cand --server 'Server to use (default: the one you logged in to last)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'infra;identities;oidc-auth;show'= {
            cand --format 'Output format [default: table on a terminal, plain otherwise]'
            cand --server 'Server to use (default: the one you logged in to last)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'infra;identities;oidc-auth;remove'= {
            cand --server 'Server to use (default: the one you logged in to last)'
            cand --force 'Succeed even if there is none'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'infra;identities;oidc-auth;help'= {
            cand set 'Set (replace) the identity''s oidc-auth configuration'
            cand show 'Show the identity''s oidc-auth configuration'
            cand remove 'Remove the identity''s oidc-auth configuration and revoke the access tokens it issued'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'infra;identities;oidc-auth;help;set'= {
        }
        &'infra;identities;oidc-auth;help;show'= {
        }
        &'infra;identities;oidc-auth;help;remove'= {
        }
        &'infra;identities;oidc-auth;help;help'= {
        }
        &'infra;identities;help'= {
            cand add 'Add a machine identity'
            cand list 'List machine identities'
            cand remove 'Remove a machine identity, with its grants and access tokens'
            cand oidc-auth 'How an identity logs in with its workload''s OIDC JWT'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'infra;identities;help;add'= {
        }
        &'infra;identities;help;list'= {
        }
        &'infra;identities;help;remove'= {
        }
        &'infra;identities;help;oidc-auth'= {
            cand set 'Set (replace) the identity''s oidc-auth configuration'
            cand show 'Show the identity''s oidc-auth configuration'
            cand remove 'Remove the identity''s oidc-auth configuration and revoke the access tokens it issued'
        }
        &'infra;identities;help;oidc-auth;set'= {
        }
        &'infra;identities;help;oidc-auth;show'= {
        }
        &'infra;identities;help;oidc-auth;remove'= {
        }
        &'infra;identities;help;help'= {
        }
        &'infra;access'= {
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand explain 'Explain a user''s access to a destination: groups, grants, RBAC bindings'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'infra;access;explain'= {
            cand --format 'Output format [default: table on a terminal, plain otherwise]'
            cand --server 'Server to use (default: the one you logged in to last)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'infra;access;help'= {
            cand explain 'Explain a user''s access to a destination: groups, grants, RBAC bindings'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'infra;access;help;explain'= {
        }
        &'infra;access;help;help'= {
        }
        &'infra;tokens'= {
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand create 'Print a credential for a cluster (kubectl runs this; see `infra login`)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'infra;tokens;create'= {
            cand --server 'The server: host, host:port or https URL (default: the current one)'
            cand --destination 'The destination (cluster) to get a token for'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'infra;tokens;help'= {
            cand create 'Print a credential for a cluster (kubectl runs this; see `infra login`)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'infra;tokens;help;create'= {
        }
        &'infra;tokens;help;help'= {
        }
        &'infra;server'= {
            cand --log-format 'How to write logs: text, or json (one object per line)'
            cand --listen 'Address to serve HTTPS on'
            cand --tls-cert 'PEM certificate to serve (default: a self-signed one kept in the data dir)'
            cand --tls-key 'PEM private key for --tls-cert'
            cand --data-dir 'Where the server keeps its SQLite store, certificate and root key'
            cand --db 'PostgreSQL URL (postgres://USER:PASS@HOST/DB); default: SQLite in the data dir'
            cand --config 'YAML file that declares providers, users, groups, grants and an admin key'
            cand --root-key-file 'File with the key that encrypts secrets at rest (default: root.key in the data dir)'
            cand --session-expiry 'How long a key issued at login lasts'
            cand --session-inactivity-timeout 'How long a key issued at login may go unused'
            cand --url 'The server''s public URL: the issuer of cluster tokens (default: https://LISTEN-ADDRESS)'
            cand --token-ttl 'How long a cluster token lasts'
            cand --idp-revalidate-interval 'Re-check a user with their identity provider when the last check is older than this'
            cand --signing-key-rotation 'How often the token signing key is replaced'
            cand --oidc-issuer-url 'Register this OpenID provider at start (its issuer URL)'
            cand --oidc-issuer-client-id 'The client id registered at --oidc-issuer-url'
            cand --oidc-issuer-client-secret 'The client secret registered at --oidc-issuer-url'
            cand --oidc-username-claim 'The claim that names users of the --oidc-issuer-url provider, e.g. preferred_username [default: the verified email]'
            cand --oidc-ca-file 'PEM file with the CA of --oidc-issuer-url, when it is not publicly trusted'
            cand --oidc-provider-name 'The name of the provider registered from the --oidc-issuer-* flags'
            cand --oidc-callback-url 'The public URL of the server''s web sign-in callback (behind a proxy)'
            cand --device-code-ttl 'How long a device code (`infra login --device`) waits for approval'
            cand --device-poll-interval 'How often a device may poll for its sign-in at first'
            cand --trusted-proxies 'Load balancers and proxies (CIDR,…) whose X-Forwarded-For or PROXY header names the client'
            cand --max-connections 'Connections open at once at most; more are closed at once'
            cand --header-read-timeout 'Time a client has for its TLS handshake and each request''s headers (also ends idle keep-alive)'
            cand --idle-timeout 'Close a connection with no request in progress for this long (a watch, a long poll or an exec session is one in progress while it lasts)'
            cand --metrics-listen 'Serve /metrics and /healthz over plain HTTP here (keep it private); "off" for none [default: 127.0.0.1:9464, skipped with a warning when taken]'
            cand --request-timeout 'Longest time a request may take, body included (long polls take up to 30s)'
            cand --audit-retention 'How long the audit log keeps an entry (0 keeps them forever)'
            cand --session-retention 'How long recorded exec and attach sessions are kept (0 keeps them forever)'
            cand --max-session-bytes 'The largest a session''s recording may grow (bytes of asciicast); a connector that reaches it ends the session'
            cand --audit-prune-interval 'How often old audit entries are removed (by one replica)'
            cand --max-long-polls 'Connectors'' long polls one replica holds open at once (one per connector); beyond it, 503 with Retry-After'
            cand --db-max-connections 'Database connections per replica [default: 8 for SQLite, 16 for PostgreSQL]'
            cand --print-admin-key 'Print the first start''s admin access key, while it has not been used, and exit'
            cand --dev 'Development mode: an embedded OpenID provider that signs in anyone (no real security)'
            cand --ephemeral 'Keep everything in a temporary directory, removed at exit'
            cand --dev-allow-remote 'Let --dev listen on a non-loopback address (anyone who reaches it can sign in)'
            cand --proxy-protocol 'Read a PROXY protocol v2 header (before TLS) from --trusted-proxies'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'infra;connector'= {
            cand --log-format 'How to write logs: text, or json (one object per line)'
            cand --server 'The infra server''s URL (https://infra.example.com)'
            cand --access-key 'A connector access key (`infra keys add --connector`)'
            cand --access-key-file 'Read the connector access key from this file instead (kept out of `ps` and the environment)'
            cand --name 'The destination name users see (e.g. prod)'
            cand --listen 'Address to serve on [default: 0.0.0.0:8443]'
            cand --endpoint 'HOST:PORT users reach this connector at (written into their kubeconfig)'
            cand --ca-cert 'CA certificate (PEM) that signs the serving certificate [default: generated and kept]'
            cand --ca-key 'The CA''s private key (PEM)'
            cand --data-dir 'Where a generated CA is kept [default: the platform''s data dir]/infra-connector'
            cand --kubeconfig 'Reach the cluster as a kubeconfig context does (outside a cluster: kind, minikube, k3d, …)'
            cand --context 'The kubeconfig''s context to use [default: its current context]'
            cand --kube-api 'The Kubernetes API [default: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT]'
            cand --kube-token-file 'The connector''s service-account token, re-read when it changes'
            cand --kube-ca-file 'The Kubernetes API''s CA (PEM)'
            cand --server-ca-file 'Trust the infra server''s certificate from this PEM file'
            cand --server-trusted-fingerprint 'Trust the infra server''s certificate with this SHA-256 fingerprint'
            cand --sync-rbac 'Keep Kubernetes RBAC bindings in step with infra''s grants'
            cand --max-session-bytes 'The largest a session''s recording may grow; a session that reaches it is ended'
            cand --config 'YAML file with any of these settings (camelCase keys)'
            cand --heartbeat 'How often to heartbeat to the server [default: 5m while the grants'' long poll tells the server the connector is alive, else 30s]'
            cand --rbac-poll 'How often to retry grants that could not be applied yet'
            cand --rbac-resync 'How often to reconcile every binding anyway (repairs hand edits)'
            cand --leeway 'Clock-skew leeway for token expiry, in seconds'
            cand --metrics-listen 'Serve /healthz and /metrics over plain HTTP here (off the users'' port); "off" for none [default: 127.0.0.1:9465]'
            cand --trusted-proxies 'Load balancers and proxies (CIDR,…) whose X-Forwarded-For or PROXY header names the client'
            cand --max-connections 'Connections open at once at most; more are closed at once'
            cand --header-read-timeout 'Time a client has for its TLS handshake and each request''s headers (also ends idle keep-alive)'
            cand --idle-timeout 'Close a connection with no request in progress for this long (a watch, a long poll or an exec session is one in progress while it lasts)'
            cand --server-skip-tls-verify 'Do not verify the infra server''s certificate (unsafe)'
            cand --record-sessions 'Record every exec and attach session through this connector (asciicast v2, kept by the server: `infra sessions list`); a session that cannot be recorded is refused. Grants may ask for it too (`infra grants add --record-sessions`)'
            cand --proxy-protocol 'Read a PROXY protocol v2 header (before TLS) from --trusted-proxies'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'infra;completion'= {
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'infra;version'= {
            cand --server 'Server to use (default: the one you logged in to last)'
            cand --format 'Output format [default: table on a terminal, plain otherwise]'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'infra;help'= {
            cand login 'Log in to an infra server'
            cand logout 'Log out: revoke the access key and forget it on this machine'
            cand status 'Show where you are logged in and whether each key still works'
            cand whoami 'Show whom you are logged in as, and your access to a destination'
            cand list 'List the clusters and namespaces you can reach, with your roles'
            cand use 'Switch kubectl to a cluster (or a namespace in it) you can reach'
            cand users 'Manage users (admins)'
            cand groups 'Manage groups and their members (admins)'
            cand grants 'Manage grants: who may do what where'
            cand destinations 'List and remove destinations (clusters)'
            cand keys 'Manage access keys'
            cand providers 'Manage identity providers (admins)'
            cand audit 'Show the audit log (admins)'
            cand sessions 'Recorded exec and attach sessions: list, play back, export'
            cand identities 'Manage machine identities and their OIDC JWT logins (admins)'
            cand access 'Explain access: who may do what where, and why'
            cand tokens 'Credentials for clusters: kubectl''s exec plugin'
            cand server 'Run the infra API server'
            cand connector 'Run the connector next to a cluster''s API server'
            cand completion 'Print the completion script for a shell'
            cand version 'Print the CLI''s version and the server''s'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'infra;help;login'= {
        }
        &'infra;help;logout'= {
        }
        &'infra;help;status'= {
        }
        &'infra;help;whoami'= {
        }
        &'infra;help;list'= {
        }
        &'infra;help;use'= {
        }
        &'infra;help;users'= {
            cand add 'Add a user'
            cand list 'List users'
            cand edit 'Change a local user''s password (yours: give the current one first)'
            cand remove 'Remove a user, with their grants and keys'
        }
        &'infra;help;users;add'= {
        }
        &'infra;help;users;list'= {
        }
        &'infra;help;users;edit'= {
        }
        &'infra;help;users;remove'= {
        }
        &'infra;help;groups'= {
            cand add 'Add a group'
            cand list 'List groups'
            cand remove 'Remove a group and its grants'
            cand adduser 'Add a user to a group'
            cand removeuser 'Remove a user from a group'
        }
        &'infra;help;groups;add'= {
        }
        &'infra;help;groups;list'= {
        }
        &'infra;help;groups;remove'= {
        }
        &'infra;help;groups;adduser'= {
        }
        &'infra;help;groups;removeuser'= {
        }
        &'infra;help;grants'= {
            cand add 'Grant a role on a destination (or a namespace in it)'
            cand list 'List grants (yours, or everyone''s for admins)'
            cand remove 'Remove a grant'
        }
        &'infra;help;grants;add'= {
        }
        &'infra;help;grants;list'= {
        }
        &'infra;help;grants;remove'= {
        }
        &'infra;help;destinations'= {
            cand list 'List destinations and whether their connectors are connected'
            cand remove 'Remove a destination'
        }
        &'infra;help;destinations;list'= {
        }
        &'infra;help;destinations;remove'= {
        }
        &'infra;help;keys'= {
            cand add 'Create an access key; it is printed once, on stdout'
            cand list 'List access keys (yours; admins: --user NAME or --all)'
            cand remove 'Revoke an access key, by name or id'
        }
        &'infra;help;keys;add'= {
        }
        &'infra;help;keys;list'= {
        }
        &'infra;help;keys;remove'= {
        }
        &'infra;help;providers'= {
            cand add 'Add an OpenID Connect identity provider'
            cand list 'List identity providers'
            cand edit 'Change a provider''s URL, client id or secret'
            cand remove 'Remove a provider'
        }
        &'infra;help;providers;add'= {
        }
        &'infra;help;providers;list'= {
        }
        &'infra;help;providers;edit'= {
        }
        &'infra;help;providers;remove'= {
        }
        &'infra;help;audit'= {
        }
        &'infra;help;sessions'= {
            cand list 'List recorded sessions, newest first (everyone''s for admins, else your own)'
            cand play 'Play a session back in this terminal, at the pace it happened'
            cand export 'Write a session''s recording, an asciicast v2 file (`asciinema play FILE` plays it)'
        }
        &'infra;help;sessions;list'= {
        }
        &'infra;help;sessions;play'= {
        }
        &'infra;help;sessions;export'= {
        }
        &'infra;help;identities'= {
            cand add 'Add a machine identity'
            cand list 'List machine identities'
            cand remove 'Remove a machine identity, with its grants and access tokens'
            cand oidc-auth 'How an identity logs in with its workload''s OIDC JWT'
        }
        &'infra;help;identities;add'= {
        }
        &'infra;help;identities;list'= {
        }
        &'infra;help;identities;remove'= {
        }
        &'infra;help;identities;oidc-auth'= {
            cand set 'Set (replace) the identity''s oidc-auth configuration'
            cand show 'Show the identity''s oidc-auth configuration'
            cand remove 'Remove the identity''s oidc-auth configuration and revoke the access tokens it issued'
        }
        &'infra;help;identities;oidc-auth;set'= {
        }
        &'infra;help;identities;oidc-auth;show'= {
        }
        &'infra;help;identities;oidc-auth;remove'= {
        }
        &'infra;help;access'= {
            cand explain 'Explain a user''s access to a destination: groups, grants, RBAC bindings'
        }
        &'infra;help;access;explain'= {
        }
        &'infra;help;tokens'= {
            cand create 'Print a credential for a cluster (kubectl runs this; see `infra login`)'
        }
        &'infra;help;tokens;create'= {
        }
        &'infra;help;server'= {
        }
        &'infra;help;connector'= {
        }
        &'infra;help;completion'= {
        }
        &'infra;help;version'= {
        }
        &'infra;help;help'= {
        }
    ]
    $completions[$command]
}
