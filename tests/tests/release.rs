//! `jantar-peer release`: three key holders, a threshold of two. Each signs on their own
//! copy, the copies are combined, and the result verifies; one signature, a tampered
//! manifest, an unknown key, an expired manifest and a missing target are each refused
//! by name, and nothing a failed command touched is replaced.

use std::path::Path;

use anyhow::{Context, Result, ensure};
use jantar_net::release::manifest::this_target;
use jantar_tests::harness::{Role, run_to_end};

/// Runs `jantar-peer release args...`: (success, stdout, stderr).
fn release<S: AsRef<str>>(args: &[S]) -> Result<(bool, String, String)> {
    let mut all = vec!["release"];
    all.extend(args.iter().map(AsRef::as_ref));
    let (status, out, err) = run_to_end(Role::Peer, &all)?;
    Ok((status.success(), out, err))
}

fn ok<S: AsRef<str> + std::fmt::Debug>(args: &[S]) -> Result<String> {
    let (success, out, err) = release(args)?;
    ensure!(success, "release {args:?} failed:\n{out}{err}");
    Ok(out)
}

fn refused<S: AsRef<str> + std::fmt::Debug>(args: &[S], says: &str) -> Result<String> {
    let (success, out, err) = release(args)?;
    ensure!(!success, "release {args:?} succeeded:\n{out}");
    ensure!(
        err.contains(says),
        "release {args:?} did not say {says:?}:\n{err}"
    );
    Ok(err)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

#[test]
fn two_of_three_key_holders_sign_apart_and_every_bad_manifest_is_refused() -> Result<()> {
    let d = tempfile::tempdir()?;
    let dir = d.path();
    let keys: Vec<(std::path::PathBuf, String)> = ["alice", "bob", "carol"]
        .iter()
        .map(|name| {
            let path = dir.join(format!("{name}.key"));
            let public = ok(&["keygen", "--out", s(&path)])?.trim().to_string();
            Ok((path, public))
        })
        .collect::<Result<_>>()?;
    // A key is never replaced.
    let before = std::fs::read(&keys[0].0)?;
    refused(
        &["keygen", "--out", s(&keys[0].0)],
        "an existing file is never replaced",
    )?;
    ensure!(std::fs::read(&keys[0].0)? == before, "the key file changed");

    let artifact = dir.join("jantar-peer-9.9.9");
    std::fs::write(&artifact, vec![7u8; 3 << 20])?;
    let target = this_target();
    let unsigned = dir.join("release.json");
    let spec = format!("{target}={}", s(&artifact));
    let new = [
        "new",
        "--version",
        "9.9.9",
        "--sequence",
        "7",
        "--target",
        &spec,
        "--out",
        s(&unsigned),
    ];
    ok(&new)?;
    refused(&new, "an existing file is never replaced")?;
    refused(
        &[
            "new",
            "--version",
            "1",
            "--sequence",
            "1",
            "--target",
            s(&artifact),
            "--out",
            s(&dir.join("x.json")),
        ],
        "is not TARGET=PATH",
    )?;

    // Alice and Bob sign their own copies.
    let (a, b) = (dir.join("release-a.json"), dir.join("release-b.json"));
    std::fs::copy(&unsigned, &a)?;
    std::fs::copy(&unsigned, &b)?;
    ok(&["sign", "--key", s(&keys[0].0), s(&a)])?;
    ok(&["sign", "--key", s(&keys[1].0), s(&b)])?;
    let combined = dir.join("release-signed.json");
    ok(&["combine", "--out", s(&combined), s(&a), s(&b)])?;

    let trust: Vec<&str> = keys
        .iter()
        .flat_map(|(_, public)| ["--trusted-key", public.as_str()])
        .collect();
    let verify = |manifest: &Path, extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = vec!["verify".into()];
        v.extend(trust.iter().map(|x| x.to_string()));
        v.extend(["--threshold".into(), "2".into()]);
        v.extend(extra.iter().map(|x| x.to_string()));
        v.push(s(manifest).into());
        v
    };
    let out = ok(&verify(&combined, &[]))?;
    let mut four = verify(&combined, &[]);
    let at = four.len() - 2;
    four[at] = "4".into();
    refused(
        &four,
        "--threshold 4 must be between 1 and the 3 trusted keys",
    )?;
    ensure!(
        out.contains("verified") && out.contains("2 of 3 trusted keys") && out.contains("9.9.9"),
        "{out}"
    );

    // One signature of the two needed.
    refused(
        &verify(&a, &[]),
        "1 valid signature(s) from trusted keys; 2 needed",
    )?;
    // Tampered: the artifact's size changed after signing.
    let text = std::fs::read_to_string(&combined)?;
    let tampered = dir.join("tampered.json");
    std::fs::write(
        &tampered,
        text.replace("\"size\": 3145728", "\"size\": 3145729"),
    )?;
    ensure!(
        std::fs::read_to_string(&tampered)? != text,
        "nothing tampered"
    );
    refused(&verify(&tampered, &[]), "0 valid signature(s)")?;
    // Signed by a key nobody trusts (and one trusted key): below the threshold.
    let stranger = dir.join("stranger.key");
    ok(&["keygen", "--out", s(&stranger)])?;
    let c = dir.join("release-c.json");
    std::fs::copy(&a, &c)?;
    ok(&["sign", "--key", s(&stranger), s(&c)])?;
    refused(&verify(&c, &[]), "1 valid signature(s)")?;
    // Another target.
    refused(
        &verify(&combined, &["--target", "plan9-mips"]),
        &format!("no artifact for target `plan9-mips` (it has: {target})"),
    )?;
    // Expired.
    let expired = dir.join("expired.json");
    ok(&[
        "new",
        "--version",
        "9.9.8",
        "--sequence",
        "6",
        "--expires-in",
        "0s",
        "--target",
        &spec,
        "--out",
        s(&expired),
    ])?;
    ok(&["sign", "--key", s(&keys[0].0), s(&expired)])?;
    ok(&["sign", "--key", s(&keys[2].0), s(&expired)])?;
    refused(&verify(&expired, &[]), "expired")?;
    // A bad key file is named, and the manifest is left as it was.
    let before = std::fs::read(&combined)?;
    let bad_key = dir.join("bad.key");
    std::fs::write(&bad_key, "not a key\n")?;
    std::fs::set_permissions(
        &bad_key,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .context("chmod")?;
    refused(
        &["sign", "--key", s(&bad_key), s(&combined)],
        &format!("{} is not a release key file", s(&bad_key)),
    )?;
    ensure!(
        std::fs::read(&combined)? == before,
        "a failed sign changed the manifest"
    );
    Ok(())
}
