//! The client flags — `--profile`, `--json`, `--proxy`, `--passphrase-fd` —
//! on the commands
//! they mean something to, and nowhere else.
//!
//! A daemon (`serve`, `server`, `relay`, `proxy`) has its own settings and
//! none of these: its `--help` does not list them, and `umbra --profile DIR
//! serve` is a usage error rather than a flag silently ignored. The benches
//! and the demo take `--json` only. Every other command takes all three,
//! after the command or after any of its subcommands (`umbra group create
//! --profile DIR team`), or before the command as earlier versions did. The
//! environment (`UMBRA_PROFILE`, `UMBRA_PROXY`) still applies.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, CommandFactory, FromArgMatches};

use crate::Cli;

/// Commands that take none of the client flags.
const DAEMONS: &[&str] = &["serve", "server", "relay", "proxy"];
/// Commands that take `--json` only.
const JSON_ONLY: &[&str] = &["bench", "demo"];
/// Subcommands of `business` that are the host's (or the business's
/// system's), not a user's: the daemons take none of the client flags,
/// `token` `--json` only.
const HOST_DAEMONS: &[&str] = &["serve", "receive-webhooks"];
const HOST_JSON_ONLY: &str = "token";

/// The client flags, as given.
#[derive(Debug, Default)]
pub struct ClientFlags {
    /// Profile directory.
    pub profile: Option<PathBuf>,
    /// JSON instead of text.
    pub json: bool,
    /// Proxy link for this command.
    pub proxy: Option<String>,
    /// File descriptor to read the profile's passphrase from.
    pub passphrase_fd: Option<i32>,
}

fn profile_arg() -> Arg {
    Arg::new("profile")
        .long("profile")
        .global(true)
        .env("UMBRA_PROFILE")
        .value_name("DIR")
        .value_parser(clap::value_parser!(PathBuf))
        .help(
            "Profile directory holding this device's account, keys and history. \
             Use one per user to run several users on one machine",
        )
}

fn json_arg() -> Arg {
    Arg::new("json")
        .long("json")
        .global(true)
        .action(ArgAction::SetTrue)
        .help("Print machine-readable JSON instead of text")
}

fn passphrase_fd_arg() -> Arg {
    Arg::new("passphrase_fd")
        .long("passphrase-fd")
        .global(true)
        .env("UMBRA_PASSPHRASE_FD")
        .value_name("N")
        .value_parser(clap::value_parser!(i32))
        .help(
            "Read the profile's passphrase from this file descriptor's first line (scripts; \
             UMBRA_PASSPHRASE also works). Without either it is asked on the terminal",
        )
}

fn proxy_arg() -> Arg {
    Arg::new("proxy")
        .long("proxy")
        .global(true)
        .env("UMBRA_PROXY")
        .value_name("LINK")
        .help(
            "Reach the server through this proxy (umbra://proxy?...) for this command; \
             `umbra network proxy LINK` keeps one in the profile",
        )
}

/// The command line's parser: `Cli` with the client flags added to the
/// commands that take them.
pub fn command() -> clap::Command {
    let mut cmd = Cli::command();
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for name in names {
        if DAEMONS.contains(&name.as_str()) {
            continue;
        }
        if name == "business" {
            cmd = cmd.mut_subcommand(&name, business_flags);
            continue;
        }
        let json_only = JSON_ONLY.contains(&name.as_str());
        cmd = cmd.mut_subcommand(&name, |sub| {
            let sub = sub.arg(json_arg());
            if json_only {
                sub
            } else {
                sub.arg(profile_arg())
                    .arg(proxy_arg())
                    .arg(passphrase_fd_arg())
            }
        });
    }
    cmd
}

/// `business`: the user's subcommands take the client flags, the host's
/// do not (`serve`) or take `--json` only (`token`).
fn business_flags(business: clap::Command) -> clap::Command {
    let names: Vec<String> = business
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    let mut business = business;
    for name in names {
        business = business.mut_subcommand(&name, |sub| match name.as_str() {
            n if HOST_DAEMONS.contains(&n) => sub,
            HOST_JSON_ONLY => sub.arg(json_arg()),
            _ => sub
                .arg(json_arg())
                .arg(profile_arg())
                .arg(proxy_arg())
                .arg(passphrase_fd_arg()),
        });
    }
    business
}

/// Parses the process's arguments, exiting with a usage error (code 2) on
/// a bad one.
pub fn parse() -> (Cli, ClientFlags) {
    parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit())
}

/// Parses `args` (the program's name first).
pub fn parse_from(
    args: impl IntoIterator<Item = impl Into<OsString> + Clone>,
) -> Result<(Cli, ClientFlags), clap::Error> {
    let mut cmd = command();
    let matches = cmd.try_get_matches_from_mut(args)?;
    let cli = Cli::from_arg_matches(&matches)?;
    let Some((name, sub)) = matches.subcommand() else {
        return Ok((cli, ClientFlags::default()));
    };
    let before = ClientFlags {
        profile: matches.get_one::<PathBuf>("profile").cloned(),
        json: matches.get_flag("json"),
        proxy: matches.get_one::<String>("proxy").cloned(),
        passphrase_fd: None,
    };
    let host = match (name, sub.subcommand_name()) {
        ("business", Some(s)) if HOST_DAEMONS.contains(&s) || s == HOST_JSON_ONLY => Some(s),
        _ => None,
    };
    if DAEMONS.contains(&name) || JSON_ONLY.contains(&name) || host.is_some() {
        let daemon = DAEMONS.contains(&name) || host.is_some_and(|h| HOST_DAEMONS.contains(&h));
        let stray = [
            ("--profile", before.profile.is_some()),
            ("--proxy", before.proxy.is_some()),
            ("--json", before.json && daemon),
        ];
        let shown = match host {
            Some(h) => format!("{name} {h}"),
            None => name.to_string(),
        };
        if let Some((flag, _)) = stray.iter().find(|(_, given)| *given) {
            return Err(cmd.error(
                clap::error::ErrorKind::ArgumentConflict,
                format!("{flag} is for client commands; `umbra {shown}` does not take it"),
            ));
        }
        if host == Some(HOST_JSON_ONLY) {
            let mut inner = sub;
            while let Some((_, m)) = inner.subcommand() {
                inner = m;
            }
            return Ok((
                cli,
                ClientFlags {
                    json: before.json || inner.get_flag("json"),
                    ..ClientFlags::default()
                },
            ));
        }
        return Ok((cli, before));
    }
    // Global flags reach the innermost subcommand's matches, wherever
    // on the line they were given.
    let mut inner = sub;
    while let Some((_, m)) = inner.subcommand() {
        inner = m;
    }
    let given = |id: &str| inner.value_source(id) == Some(ValueSource::CommandLine);
    let pick = |id: &str, before: Option<String>| -> Option<String> {
        let here = inner.get_one::<String>(id).cloned();
        if given(id) { here } else { before.or(here) }
    };
    let profile = if given("profile") {
        inner.get_one::<PathBuf>("profile").cloned()
    } else {
        before
            .profile
            .or_else(|| inner.get_one::<PathBuf>("profile").cloned())
    };
    Ok((
        cli,
        ClientFlags {
            profile,
            json: before.json || inner.get_flag("json"),
            proxy: pick("proxy", before.proxy),
            passphrase_fd: inner.get_one::<i32>("passphrase_fd").copied(),
        },
    ))
}

/// The client flags of `args`, for tests.
#[cfg(test)]
fn flags_of(args: &[&str]) -> Result<ClientFlags, clap::Error> {
    parse_from(std::iter::once("umbra").chain(args.iter().copied())).map(|(_, f)| f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn help(path: &[&str]) -> String {
        let mut cmd = command();
        cmd.build();
        let mut sub = &mut cmd;
        for name in path {
            sub = sub.find_subcommand_mut(name).expect("subcommand");
        }
        sub.render_long_help().to_string()
    }

    #[test]
    fn daemons_list_no_client_flags() {
        for d in DAEMONS {
            let h = help(&[d]);
            for flag in ["--profile", "--proxy", "--json"] {
                assert!(!h.contains(flag), "`umbra {d} --help` lists {flag}:\n{h}");
            }
        }
        let h = help(&["bench"]);
        assert!(h.contains("--json") && !h.contains("--profile"), "{h}");
        let h = help(&["send"]);
        for flag in ["--profile", "--proxy", "--json"] {
            assert!(h.contains(flag), "{h}");
        }
        let h = help(&["group", "create"]);
        assert!(h.contains("--profile"), "{h}");
        // The business host's daemon is a daemon; its tokens take --json.
        let h = help(&["business", "serve"]);
        for flag in ["--profile", "--proxy", "--json"] {
            assert!(
                !h.contains(flag),
                "`umbra business serve --help` lists {flag}:\n{h}"
            );
        }
        let h = help(&["business", "token", "create"]);
        assert!(h.contains("--json") && !h.contains("--profile"), "{h}");
        let h = help(&["business", "register"]);
        assert!(h.contains("--profile"), "{h}");
    }

    #[test]
    fn client_flags_wherever_they_are_given() {
        let f = flags_of(&["send", "bob", "hi", "--profile", "/p", "--json"]).expect("parse");
        assert_eq!(f.profile, Some(PathBuf::from("/p")));
        assert!(f.json);
        let f = flags_of(&["--profile", "/q", "--json", "send", "bob", "hi"]).expect("parse");
        assert_eq!(f.profile, Some(PathBuf::from("/q")));
        assert!(f.json);
        let f = flags_of(&["group", "create", "--profile", "/r", "team", "bob"]).expect("parse");
        assert_eq!(f.profile, Some(PathBuf::from("/r")));
        let f = flags_of(&["group", "--proxy", "L", "create", "team", "bob"]).expect("parse");
        assert_eq!(f.proxy.as_deref(), Some("L"));
        // After the command wins over before it.
        let f = flags_of(&["--profile", "/a", "sync", "--profile", "/b"]).expect("parse");
        assert_eq!(f.profile, Some(PathBuf::from("/b")));
    }

    #[test]
    fn daemons_refuse_client_flags() {
        for args in [
            &["serve", "--profile", "/p"][..],
            &["--profile", "/p", "serve"],
            &["--json", "relay"],
            &["--proxy", "L", "server"],
            &["--profile", "/p", "bench"],
            &["--profile", "/p", "business", "serve", "--business", "/b"],
            &["business", "serve", "--json"],
            &["--proxy", "L", "business", "token", "list"],
        ] {
            let e = flags_of(args)
                .map(|_| ())
                .expect_err(&format!("{args:?} taken"));
            assert_eq!(e.exit_code(), 2, "{args:?}");
        }
        assert!(flags_of(&["--json", "bench", "proxy"]).expect("parse").json);
        assert!(flags_of(&["bench", "proxy", "--json"]).expect("parse").json);
        assert!(
            flags_of(&["business", "token", "list", "--json"])
                .expect("parse")
                .json
        );
        let f =
            flags_of(&["business", "register", "--name", "A", "--profile", "/p"]).expect("parse");
        assert_eq!(f.profile, Some(PathBuf::from("/p")));
    }
}
