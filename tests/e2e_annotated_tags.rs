//! Annotated tags (`git tag -a v1.0.0 && git push --tags`, the usual way to tag a release) build
//! the commit they tag, for each forge: a real annotated tag pushed to a real bare repository, the
//! hook payload built the way GitHub, GitLab and Gitea build it (`after` = the tag object, the
//! commit in `head_commit.id` / `checkout_sha`), the real kiln, dockerd and registry.

mod support;

use std::process::{Command, Stdio};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::kiln::Kiln;
use support::{GitRepo, Registry, ZERO_SHA, github_push_payload};

/// A repository with an annotated tag `v1.0.0` on a commit that is no longer `main`'s head.
struct Release {
    git: GitRepo,
    /// The commit `v1.0.0` tags.
    commit: String,
    /// The tag object: what a push of `v1.0.0` reports as `after`.
    tag_object: String,
    /// `/version.txt` in the image built from `commit`.
    content: String,
}

fn release() -> Release {
    let git = GitRepo::new();
    git.write(
        "Dockerfile",
        "FROM scratch\nCOPY version.txt /version.txt\n",
    );
    git.write("version.txt", "before the release\n");
    git.commit("first");
    // Unique per run, so Docker's build cache never answers for another test's build.
    let content = format!("release 1.0.0 of {}\n", git.clone_url());
    git.write("version.txt", &content);
    let commit = git.commit("Release 1.0.0");
    let tag_object = git.tag_annotated("v1.0.0", "Version 1.0.0");
    assert_ne!(
        tag_object, commit,
        "an annotated tag is an object of its own"
    );
    assert_eq!(git.rev_parse("v1.0.0^{commit}"), commit);
    git.write("version.txt", "after the release\n");
    git.commit("Start 1.1.0");
    git.push("main");
    git.push_tag("v1.0.0");
    assert_eq!(
        git.remote_sha("refs/tags/v1.0.0").as_deref(),
        Some(tag_object.as_str())
    );
    Release {
        git,
        commit,
        tag_object,
        content,
    }
}

/// kiln with `acme/app` linked to the release's repository through `provider`, and a rule building
/// `v*` tags with overwrite off (`{tag}-{sha7}`). Returns the rule's id.
async fn setup(provider: &str, secret: &str) -> (Registry, Kiln, Release, String) {
    support::ensure_docker();
    let registry = Registry::start();
    let kiln = Kiln::start(&registry, &[]).await;
    let release = release();
    kiln.post("/namespaces", json!({"name": "acme"})).await;
    kiln.post("/namespaces/acme/repos", json!({"name": "app"}))
        .await;
    let (s, body) = kiln
        .put(
            "/namespaces/acme/repos/app/source",
            json!({"provider": provider, "clone_url": release.git.clone_url(), "webhook_secret": secret}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let rule = kiln
        .rule(
            "acme",
            "app",
            json!({"type": "tag", "name": "v*", "overwrite": false}),
        )
        .await;
    (registry, kiln, release, rule)
}

async fn post_hook(
    kiln: &Kiln,
    provider: &str,
    headers: &[(&str, String)],
    body: &Value,
) -> (StatusCode, Value) {
    let mut req = kiln
        .http
        .post(format!("{}/hooks/{provider}", kiln.url))
        .header("content-type", "application/json")
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// GitHub's push of an annotated tag: `after` is the tag object, `head_commit` the tagged commit.
fn github_payload(r: &Release) -> Value {
    let mut payload = github_push_payload(
        &r.git.clone_url(),
        "refs/tags/v1.0.0",
        ZERO_SHA,
        &r.tag_object,
        false,
    );
    payload["base_ref"] = json!("refs/heads/main");
    payload["head_commit"]["id"] = json!(r.commit);
    payload["head_commit"]["message"] = json!("Release 1.0.0\n");
    let html_url = payload["repository"]["html_url"]
        .as_str()
        .unwrap()
        .to_string();
    payload["head_commit"]["url"] = json!(format!("{html_url}/commit/{}", r.commit));
    payload
}

/// Gitea's: `after` is the tag object (the ref's new value), `head_commit` is
/// `GetCommit(after)`, which peels the tag; no commits. `head_commit: None` is what Gitea before
/// 1.7 sent for tags.
fn gitea_payload(r: &Release, head_commit: Option<&str>) -> Value {
    let person = json!({"name": "Kiln Test", "email": "kiln-test@example.com", "username": "dev"});
    let head = head_commit.map(|id| {
        json!({"id": id, "message": "Release 1.0.0\n",
               "url": format!("http://gitea.local/acme/app/commit/{id}"),
               "author": person, "committer": person, "verification": null,
               "timestamp": "2025-11-23T10:02:06+01:00", "added": [], "removed": [], "modified": []})
    });
    let user = json!({"id": 3, "login": "dev", "full_name": "", "email": "kiln-test@example.com",
                      "username": "dev"});
    json!({
        "ref": "refs/tags/v1.0.0", "before": ZERO_SHA, "after": r.tag_object,
        "compare_url": format!("http://gitea.local/acme/app/compare/{ZERO_SHA}...{}", r.tag_object),
        "commits": [], "total_commits": 0, "head_commit": head,
        "repository": {"id": 7, "name": "app", "full_name": "acme/app", "clone_url": r.git.clone_url(),
                       "ssh_url": "git@gitea.local:acme/app.git", "html_url": "http://gitea.local/acme/app",
                       "default_branch": "main"},
        "pusher": user, "sender": user,
    })
}

/// GitLab's Tag Push Hook: `after` is the tag object (newrev), `checkout_sha` the tag's
/// dereferenced commit, which is also the one commit listed; `message` is the tag's.
fn gitlab_payload(r: &Release) -> Value {
    json!({
        "object_kind": "tag_push", "event_name": "tag_push", "before": ZERO_SHA, "after": r.tag_object,
        "ref": "refs/tags/v1.0.0", "ref_protected": false, "checkout_sha": r.commit,
        "message": "Version 1.0.0\n", "user_id": 4, "user_name": "Kiln Test", "user_username": "dev",
        "user_email": "", "project_id": 15,
        "project": {"id": 15, "name": "app", "web_url": "http://gitlab.local/acme/app",
                    "git_ssh_url": "git@gitlab.local:acme/app.git", "git_http_url": r.git.clone_url(),
                    "namespace": "acme", "path_with_namespace": "acme/app", "default_branch": "main"},
        "commits": [{"id": r.commit, "message": "Release 1.0.0\n", "title": "Release 1.0.0",
                     "timestamp": "2025-11-23T10:02:06+01:00",
                     "url": format!("http://gitlab.local/acme/app/-/commit/{}", r.commit),
                     "author": {"name": "Kiln Test", "email": "kiln-test@example.com"},
                     "added": [], "modified": ["version.txt"], "removed": []}],
        "total_commits_count": 1, "push_options": {},
        "repository": {"name": "app", "url": "git@gitlab.local:acme/app.git", "git_http_url": r.git.clone_url(),
                       "homepage": "http://gitlab.local/acme/app"},
    })
}

/// Sends the annotated tag's push as `provider` sends it, and returns the build it queued.
async fn push_the_tag(kiln: &Kiln, provider: &str, secret: &str, r: &Release) -> Value {
    let (status, body) = match provider {
        "github" => {
            kiln.github_hook(
                "push",
                &support::new_delivery_id(),
                secret,
                &github_payload(r),
            )
            .await
        }
        "gitea" => {
            let payload = gitea_payload(r, Some(&r.commit));
            let sig = kiln::forge::gitea::sign(secret.as_bytes(), payload.to_string().as_bytes());
            let headers = [
                ("x-gitea-event", "push".to_string()),
                ("x-gitea-delivery", support::new_delivery_id()),
                ("x-gitea-signature", sig),
            ];
            post_hook(kiln, "gitea", &headers, &payload).await
        }
        "gitlab" => {
            let headers = [
                ("x-gitlab-event", "Tag Push Hook".to_string()),
                ("x-gitlab-token", secret.to_string()),
                ("x-gitlab-event-uuid", support::new_delivery_id()),
            ];
            post_hook(kiln, "gitlab", &headers, &gitlab_payload(r)).await
        }
        other => panic!("no forge {other}"),
    };
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let ids = body["builds"].as_array().expect("build ids");
    assert_eq!(ids.len(), 1, "{body}");
    kiln.get(&format!("/builds/{}", ids[0].as_str().unwrap()))
        .await
        .1
}

/// The bytes of `path` in `repo:tag` as the registry serves it: manifest, then each layer blob
/// (gunzipped), top layer first.
async fn file_in_registry_image(registry: &Registry, repo: &str, tag: &str, path: &str) -> String {
    let manifest = registry.manifest(repo, tag).await;
    let layers = manifest["layers"].as_array().expect("layers").clone();
    for layer in layers.iter().rev() {
        let digest = layer["digest"].as_str().expect("a layer digest");
        let blob = registry.blob(repo, digest).await;
        let tar = gunzip(&blob);
        let mut archive = tar::Archive::new(tar.as_slice());
        for entry in archive.entries().expect("a tar layer") {
            let mut entry = entry.expect("a tar entry");
            let name = entry.path().expect("a path").display().to_string();
            if name.trim_start_matches("./") == path.trim_start_matches('/') {
                let mut out = String::new();
                std::io::Read::read_to_string(&mut entry, &mut out).expect("a UTF-8 file");
                return out;
            }
        }
    }
    panic!("{path} is in no layer of {repo}:{tag}: {manifest}")
}

/// `gzip -dc` (layers are gzipped tars; this crate has no inflater of its own).
fn gunzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("gzip")
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("gzip");
    let mut stdin = child.stdin.take().unwrap();
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().expect("gzip output");
    writer.join().unwrap().expect("write to gzip");
    assert!(out.status.success(), "gzip -dc failed");
    out.stdout
}

/// The build succeeded from the tagged commit, as `{tag}-{sha7 of the commit}`, and the registry
/// holds that image with the commit's content.
async fn assert_built_from_the_commit(
    registry: &Registry,
    kiln: &Kiln,
    r: &Release,
    build: &Value,
) {
    let id = build["id"].as_str().expect("a build id");
    let build = kiln.wait_build(id).await;
    assert_eq!(
        build["status"],
        "succeeded",
        "{build}\n{}",
        kiln.log(id).await
    );
    assert_eq!(build["commit"], r.commit, "the commit, not the tag object");
    let tag = format!("v1.0.0-{}", &r.commit[..7]);
    assert_ne!(&r.commit[..7], &r.tag_object[..7]);
    assert_eq!(build["tag"], tag);
    assert_eq!(build["ref"], "refs/tags/v1.0.0");
    assert_eq!(build["image"], registry.image("acme/app", &tag));
    assert_eq!(registry.tags("acme/app").await, vec![tag.clone()]);
    assert_eq!(
        registry.manifest_digest("acme/app", &tag).await.as_ref(),
        build["digest"].as_str().map(String::from).as_ref()
    );
    assert_eq!(
        file_in_registry_image(registry, "acme/app", &tag, "/version.txt").await,
        r.content
    );
    let (_, versions) = kiln.get("/namespaces/acme/repos/app/versions").await;
    assert_eq!(versions[0]["tag"], tag, "{versions}");
    assert_eq!(versions[0]["commit"], r.commit, "{versions}");
}

async fn annotated_tag_push_builds_its_commit(provider: &str) {
    let secret = format!("{provider}-secret-0123456789abcdef");
    let (registry, kiln, release, rule) = setup(provider, &secret).await;
    let queued = push_the_tag(&kiln, provider, &secret, &release).await;
    // Recorded and planned from the commit from the start.
    assert_eq!(queued["commit"], release.commit, "{queued}");
    assert_eq!(
        queued["tag"],
        format!("v1.0.0-{}", &release.commit[..7]),
        "{queued}"
    );
    let (_, events) = kiln.get("/namespaces/acme/repos/app/events").await;
    let event = &events[0];
    assert_eq!(event["commit"], release.commit, "{event}");
    assert_eq!(event["ref"], "refs/tags/v1.0.0", "{event}");
    assert_eq!(event["rules"][0]["rule_id"], rule, "{event}");
    assert_eq!(
        event["rules"][0]["tag"],
        format!("v1.0.0-{}", &release.commit[..7]),
        "{event}"
    );
    assert_built_from_the_commit(&registry, &kiln, &release, &queued).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn github_annotated_tag_push_builds_the_tagged_commit() {
    annotated_tag_push_builds_its_commit("github").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn gitlab_annotated_tag_push_builds_the_tagged_commit() {
    annotated_tag_push_builds_its_commit("gitlab").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn gitea_annotated_tag_push_builds_the_tagged_commit() {
    annotated_tag_push_builds_its_commit("gitea").await;
}

/// A payload naming only the tag object (Gitea before 1.7 sent no `head_commit` for tags): the
/// build row names the tag object; the worker peels it, records the commit and works the tag out
/// again from the commit.
#[tokio::test(flavor = "multi_thread")]
async fn a_push_naming_only_the_tag_object_is_peeled_by_the_worker() {
    let secret = "gitea-secret-0123456789abcdef";
    let (registry, kiln, release, _rule) = setup("gitea", secret).await;
    let payload = gitea_payload(&release, None);
    let sig = kiln::forge::gitea::sign(secret.as_bytes(), payload.to_string().as_bytes());
    let headers = [
        ("x-gitea-event", "push".to_string()),
        ("x-gitea-delivery", support::new_delivery_id()),
        ("x-gitea-signature", sig),
    ];
    let (status, body) = post_hook(&kiln, "gitea", &headers, &payload).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["builds"][0].as_str().expect("a build").to_string();
    let (_, queued) = kiln.get(&format!("/builds/{id}")).await;
    let (_, events) = kiln.get("/namespaces/acme/repos/app/events").await;
    assert_eq!(
        events[0]["commit"], release.tag_object,
        "as the payload named it"
    );
    assert_built_from_the_commit(&registry, &kiln, &release, &queued).await;
    let log = kiln.log(&id).await;
    assert!(
        log.contains(&format!(
            "{} is an annotated tag object: building the commit it tags, {}",
            &release.tag_object[..7],
            &release.commit[..7]
        )),
        "{log}"
    );
}

/// "Build now" of a tag rule whose newest tag is annotated, and of that tag named with its tag
/// object as the commit.
#[tokio::test(flavor = "multi_thread")]
async fn build_now_of_an_annotated_tag_builds_the_tagged_commit() {
    let (registry, kiln, release, rule) = setup("github", "github-secret-0123456789abcdef").await;
    let path = format!("/namespaces/acme/repos/app/rules/{rule}/builds");

    let (s, build) = kiln.post(&path, json!({})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{build}");
    assert_eq!(build["trigger"], "manual");
    assert_built_from_the_commit(&registry, &kiln, &release, &build).await;

    let (s, build) = kiln
        .post(
            &path,
            json!({"ref": "v1.0.0", "commit": release.tag_object}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{build}");
    assert_built_from_the_commit(&registry, &kiln, &release, &build).await;
}
