//! Shell completion.
//!
//! - `kubectl gitops completion bash|zsh|fish|…`: static scripts from the clap model, for
//!   `kubectl-gitops` called directly.
//! - `kubectl-gitops __complete WORD… PARTIAL`: dynamic completion of subcommands, flags, flag
//!   values and the names of objects in the cluster, in cobra's protocol (one candidate per line,
//!   `candidate<TAB>description`, then `:<directive>`). kubectl (>= 1.26) runs an executable
//!   named `kubectl_complete-gitops` on `PATH` with the words after `gitops`; the binary behaves
//!   as `__complete` when it is called by that name (a symlink to it is enough, see
//!   docs/cli.md).
//!
//! Guarantees: completion never fails loudly (a shell calls it on every TAB): an unreachable
//! cluster or a missing kubeconfig yields no names, and every cluster request is bounded by
//! [`NAME_LOOKUP_TIMEOUT`].

use std::time::Duration;

use clap::CommandFactory as _;
use gitops_reconciler::api::{GitRepository, Kustomization};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::ListParams;
use kube::{Api, ResourceExt};

use crate::cli::{Cli, CompletionArgs};
use crate::error::Exit;
use crate::ui::Ui;

/// Name of the executable kubectl runs for this plugin's completions.
pub const KUBECTL_COMPLETE_EXECUTABLE: &str = "kubectl_complete-gitops";

/// Bound on the requests that list object names for one completion.
pub const NAME_LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

/// cobra's `ShellCompDirectiveNoFileComp`: do not fall back to file names.
const NO_FILE_COMPLETION: u8 = 4;
/// cobra's `ShellCompDirectiveDefault`: the shell may complete file names.
const DEFAULT_DIRECTIVE: u8 = 0;

pub fn run(args: &CompletionArgs, ui: &mut Ui<'_>) -> anyhow::Result<Exit> {
    let mut command = Cli::command();
    clap_complete::generate(args.shell, &mut command, "kubectl-gitops", ui.out);
    Ok(Exit::Success)
}

/// The argument vector to parse: `kubectl_complete-gitops A B` is
/// `kubectl-gitops __complete -- A B`.
pub fn rewrite_args(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let called_as = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_stem())
        .and_then(|s| s.to_str());
    if called_as != Some(KUBECTL_COMPLETE_EXECUTABLE) {
        return args;
    }
    // After `--` every word is the command line to complete, flags included: none of them is
    // taken as a flag of `__complete` itself.
    let mut rewritten = vec!["kubectl-gitops".into(), "__complete".into(), "--".into()];
    rewritten.extend(args.into_iter().skip(1));
    rewritten
}

/// The kind of object a command's NAME argument names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NamedKind {
    GitRepository,
    Kustomization,
}

/// What the words typed so far ask to complete.
#[derive(Debug, PartialEq, Eq)]
enum Want {
    /// Candidates known without the cluster, with descriptions.
    Fixed(Vec<(String, String)>, u8),
    /// Names of objects of a kind in the namespace the flags select.
    Names(NamedKind),
    /// Namespaces of the cluster.
    Namespaces,
}

/// Prints the completions of `words` (the last one is the partial word) in cobra's protocol.
pub fn complete(words: &[String], ui: &mut Ui<'_>) -> anyhow::Result<Exit> {
    let (typed, partial) = match words.split_last() {
        Some((partial, typed)) => (typed, partial.as_str()),
        None => (&[][..], ""),
    };
    let analysis = analyse(typed, partial);
    let (candidates, directive) = match analysis.want {
        Want::Fixed(candidates, directive) => (candidates, directive),
        Want::Names(kind) => (names(&analysis.global_flags, kind), NO_FILE_COMPLETION),
        Want::Namespaces => (namespaces(&analysis.global_flags), NO_FILE_COMPLETION),
    };
    for (candidate, description) in candidates {
        if !candidate.starts_with(partial) || candidate.chars().any(char::is_control) {
            continue;
        }
        if description.is_empty() {
            writeln!(ui.out, "{candidate}")?;
        } else {
            let description = description.lines().next().unwrap_or_default();
            writeln!(ui.out, "{candidate}\t{description}")?;
        }
    }
    writeln!(ui.out, ":{directive}")?;
    Ok(Exit::Success)
}

struct Analysis {
    want: Want,
    /// The global flags typed, with their values, to connect as the command would.
    global_flags: Vec<String>,
}

/// Walks the clap model along the typed words.
fn analyse(typed: &[String], partial: &str) -> Analysis {
    let mut root = Cli::command();
    // Building fills in what the derive leaves implicit (value counts, propagated globals).
    root.build();
    let mut path: Vec<clap::Command> = vec![root.clone()];
    let mut global_flags = Vec::new();
    let mut positionals = 0usize;
    let mut pending_value: Option<clap::Arg> = None;
    for word in typed {
        let current = path.last().cloned().unwrap_or_else(|| root.clone());
        if let Some(arg) = pending_value.take() {
            if arg.is_global_set() || is_root_arg(&root, &arg) {
                global_flags.push(word.clone());
            }
            continue;
        }
        if word.starts_with('-') && word.len() > 1 {
            let (name, inline_value) = match word.split_once('=') {
                Some((name, _)) => (name, true),
                None => (word.as_str(), false),
            };
            if let Some(arg) = find_flag(&root, &path, name) {
                let global = arg.is_global_set() || is_root_arg(&root, &arg);
                if global {
                    global_flags.push(word.clone());
                }
                if takes_value(&arg) && !inline_value {
                    pending_value = Some(arg);
                }
            }
            continue;
        }
        match current
            .get_subcommands()
            .find(|sub| sub.get_name() == word || sub.get_all_aliases().any(|a| a == word))
        {
            Some(sub) => {
                path.push(sub.clone());
                positionals = 0;
            }
            None => positionals += 1,
        }
    }
    let current = path.last().cloned().unwrap_or_else(|| root.clone());
    let want = if let Some(arg) = pending_value {
        value_candidates(&arg)
    } else if partial.starts_with('-') {
        Want::Fixed(flag_candidates(&root, &path), NO_FILE_COMPLETION)
    } else if current.has_subcommands() {
        Want::Fixed(
            current
                .get_subcommands()
                .filter(|sub| !sub.is_hide_set())
                .map(|sub| {
                    (
                        sub.get_name().to_owned(),
                        sub.get_about().map(|a| a.to_string()).unwrap_or_default(),
                    )
                })
                .collect(),
            NO_FILE_COMPLETION,
        )
    } else if let Some(kind) =
        named_kind(&path).filter(|_| positionals == 0 && takes_name(&current))
    {
        Want::Names(kind)
    } else {
        Want::Fixed(Vec::new(), DEFAULT_DIRECTIVE)
    };
    Analysis { want, global_flags }
}

fn is_root_arg(root: &clap::Command, arg: &clap::Arg) -> bool {
    root.get_arguments().any(|a| a.get_id() == arg.get_id())
}

fn takes_value(arg: &clap::Arg) -> bool {
    arg.get_num_args().is_some_and(|n| n.takes_values())
}

/// The flag `name` (`--long` or `-s`) of the current command or any command above it.
fn find_flag(root: &clap::Command, path: &[clap::Command], name: &str) -> Option<clap::Arg> {
    let matches = |arg: &&clap::Arg| match name.strip_prefix("--") {
        Some(long) => {
            arg.get_long() == Some(long)
                || arg
                    .get_all_aliases()
                    .is_some_and(|aliases| aliases.contains(&long))
        }
        None => {
            let short = name.strip_prefix('-').and_then(|s| s.chars().next());
            short.is_some() && arg.get_short() == short
        }
    };
    path.iter()
        .rev()
        .chain(std::iter::once(root))
        .find_map(|command| command.get_arguments().find(matches).cloned())
}

fn flag_candidates(root: &clap::Command, path: &[clap::Command]) -> Vec<(String, String)> {
    let mut seen = std::collections::BTreeMap::new();
    for command in path.iter().rev().chain(std::iter::once(root)) {
        for arg in command.get_arguments().filter(|a| !a.is_hide_set()) {
            if let Some(long) = arg.get_long() {
                let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                seen.entry(format!("--{long}")).or_insert(help);
            }
        }
    }
    seen.into_iter().collect()
}

fn value_candidates(arg: &clap::Arg) -> Want {
    match arg.get_id().as_str() {
        "namespace" => return Want::Namespaces,
        "source" => return Want::Names(NamedKind::GitRepository),
        _ => {}
    }
    let values: Vec<(String, String)> = arg
        .get_possible_values()
        .into_iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| {
            (
                v.get_name().to_owned(),
                v.get_help().map(|h| h.to_string()).unwrap_or_default(),
            )
        })
        .collect();
    if values.is_empty() {
        // A file, a URL or free text: let the shell complete file names.
        Want::Fixed(Vec::new(), DEFAULT_DIRECTIVE)
    } else {
        Want::Fixed(values, NO_FILE_COMPLETION)
    }
}

/// The kind a command path is about: `… git` under `source(s)` names GitRepositories, and
/// `kustomization(s)` Kustomizations.
fn named_kind(path: &[clap::Command]) -> Option<NamedKind> {
    match path.last()?.get_name() {
        "git" if path.len() >= 2 && path[path.len() - 2].get_name().starts_with("source") => {
            Some(NamedKind::GitRepository)
        }
        "kustomization" | "kustomizations" => Some(NamedKind::Kustomization),
        _ => None,
    }
}

/// The command has a NAME positional (a command that creates an object names a new one, and
/// listing the existing ones helps there too: `create` updates).
fn takes_name(command: &clap::Command) -> bool {
    command.get_positionals().any(|a| a.get_id() == "name")
}

fn names(global_flags: &[String], kind: NamedKind) -> Vec<(String, String)> {
    lookup(global_flags, |client, namespace| async move {
        match kind {
            NamedKind::GitRepository => {
                list_names(Api::<GitRepository>::namespaced(client, &namespace)).await
            }
            NamedKind::Kustomization => {
                list_names(Api::<Kustomization>::namespaced(client, &namespace)).await
            }
        }
    })
}

async fn list_names<K>(api: Api<K>) -> Result<Vec<String>, kube::Error>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    Ok(api
        .list_metadata(&ListParams::default())
        .await?
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect())
}

fn namespaces(global_flags: &[String]) -> Vec<(String, String)> {
    lookup(global_flags, |client, _| async move {
        list_names(Api::<Namespace>::all(client)).await
    })
}

/// Connects as the typed global flags say and runs `list`, bounded by [`NAME_LOOKUP_TIMEOUT`];
/// any failure is no candidates.
fn lookup<F, Fut>(global_flags: &[String], list: F) -> Vec<(String, String)>
where
    F: FnOnce(kube::Client, String) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<String>, kube::Error>>,
{
    let mut argv = vec!["kubectl-gitops".to_owned()];
    argv.extend(global_flags.iter().cloned());
    argv.extend(["version".to_owned(), "--client".to_owned()]);
    let Ok(cli) = <Cli as clap::Parser>::try_parse_from(argv) else {
        return Vec::new();
    };
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Vec::new();
    };
    let global = cli.global;
    let found = runtime.block_on(async {
        tokio::time::timeout(NAME_LOOKUP_TIMEOUT, async {
            let client = crate::cluster::connect(&global).await.ok()?;
            list(client, global.namespace.clone()).await.ok()
        })
        .await
        .ok()
        .flatten()
    });
    let mut names = found.unwrap_or_default();
    names.sort();
    names.into_iter().map(|n| (n, String::new())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(words: &[&str]) -> Want {
        let (partial, typed) = words.split_last().unwrap();
        let typed: Vec<String> = typed.iter().map(|w| w.to_string()).collect();
        analyse(&typed, partial).want
    }

    fn fixed_names(want: Want) -> Vec<String> {
        match want {
            Want::Fixed(candidates, _) => candidates.into_iter().map(|c| c.0).collect(),
            other => panic!("expected fixed candidates, got {other:?}"),
        }
    }

    #[test]
    fn subcommands_flags_and_values_complete_from_the_clap_model() {
        let top = fixed_names(want(&[""]));
        assert!(top.contains(&"get".to_owned()) && top.contains(&"reconcile".to_owned()));
        assert!(
            !top.contains(&"__complete".to_owned()),
            "hidden commands stay hidden"
        );
        let flags = fixed_names(want(&["get", "ks", "--"]));
        for flag in [
            "--all-namespaces",
            "--output",
            "--kubeconfig",
            "--as",
            "--request-timeout",
        ] {
            assert!(flags.contains(&flag.to_owned()), "{flag} in {flags:?}");
        }
        let outputs = fixed_names(want(&["get", "ks", "-o", ""]));
        assert_eq!(outputs, ["table", "wide", "name", "yaml", "json"]);
        assert_eq!(want(&["--kubeconfig", ""]), Want::Fixed(Vec::new(), 0));
        assert_eq!(want(&["get", "ks", "-n", ""]), Want::Namespaces);
    }

    #[test]
    fn object_names_are_completed_where_a_command_takes_one() {
        assert_eq!(
            want(&["reconcile", "ks", ""]),
            Want::Names(NamedKind::Kustomization)
        );
        assert_eq!(
            want(&["--context", "dev", "suspend", "source", "git", "ins"]),
            Want::Names(NamedKind::GitRepository)
        );
        assert_eq!(
            want(&["get", "sources", "git", ""]),
            Want::Names(NamedKind::GitRepository)
        );
        assert_eq!(
            want(&["tree", "kustomization", "-n", "apps", ""]),
            Want::Names(NamedKind::Kustomization)
        );
        assert_eq!(
            want(&["create", "ks", "vote", "--source", ""]),
            Want::Names(NamedKind::GitRepository)
        );
        // A name is there already: nothing more to name.
        assert_eq!(
            want(&["reconcile", "ks", "vote-dev", ""]),
            Want::Fixed(Vec::new(), 0)
        );
    }

    #[test]
    fn global_flags_are_kept_to_connect_as_the_command_would() {
        let typed: Vec<String> = [
            "--kubeconfig",
            "/k",
            "get",
            "ks",
            "-A",
            "-n",
            "apps",
            "--as=me",
        ]
        .iter()
        .map(|w| w.to_string())
        .collect();
        let analysis = analyse(&typed, "");
        assert_eq!(
            analysis.global_flags,
            ["--kubeconfig", "/k", "-n", "apps", "--as=me"]
        );
    }

    #[test]
    fn called_as_kubectl_complete_gitops_it_completes() {
        let args = rewrite_args(vec![
            "/usr/bin/kubectl_complete-gitops".into(),
            "get".into(),
        ]);
        assert_eq!(args, ["kubectl-gitops", "__complete", "--", "get"]);
        let args = rewrite_args(vec!["kubectl-gitops".into(), "get".into()]);
        assert_eq!(args, ["kubectl-gitops", "get"]);
        let mut out = Vec::new();
        let mut err = Vec::new();
        let mut ui = Ui {
            out: &mut out,
            err: &mut err,
            input: None,
            color: false,
            interactive: false,
        };
        let code = crate::run(["kubectl_complete-gitops", "get", "sources", "g"], &mut ui);
        assert_eq!(code, 0);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "git\tList GitRepositories\n:4\n"
        );
    }
}
