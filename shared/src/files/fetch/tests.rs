use super::*;
use crate::files::id::hash_file;

/// Request ids come from a real behaviour; a fetch only compares them.
fn request_ids(n: usize) -> Vec<OutboundRequestId> {
    let mut rr = crate::files::protocol::behaviour();
    let peer = PeerId::random();
    (0..n)
        .map(|_| rr.send_request(&peer, Request::Manifest(FileId([0; 32]))))
        .collect()
}

/// A file of `len` bytes in `dir`, byte `i` being `byte(i)`: its bytes and manifest.
fn sample(dir: &Path, len: u32, byte: impl Fn(u32) -> u8) -> (Vec<u8>, Manifest) {
    let src = dir.join("src");
    let data: Vec<u8> = (0..len).map(byte).collect();
    std::fs::write(&src, &data).unwrap();
    (data, hash_file(&src).unwrap())
}

/// A fetch the user asked for, into `dir/out/file`, with its partial file in
/// `dir/partial`.
fn user_fetch(dir: &Path, id: FileId) -> Fetch {
    Fetch::new(
        id,
        "file".into(),
        dir.join("out/file"),
        Origin::Fetched,
        &dir.join("partial"),
    )
}

#[test]
fn corrupt_chunk_drops_the_provider_and_honest_data_completes() {
    let d = tempfile::tempdir().unwrap();
    let (data, m) = sample(d.path(), 2 * 1024 * 1024 + 5, |i| {
        (i.wrapping_mul(2654435761) >> 11) as u8
    });
    let id = m.root();
    let dest = d.path().join("out/file");
    let mut f = Fetch::new(
        id,
        "file".into(),
        dest.clone(),
        Origin::Fetched,
        &d.path().join("partial"),
    );
    let (liar, honest) = (PeerId::random(), PeerId::random());
    f.add_provider(liar);
    let ids = request_ids(8);

    // A manifest that does not hash to the ID is refused.
    f.sent(ids[0], liar, None);
    let mut forged = m.clone();
    forged.leaves[0][0] ^= 1;
    assert!(f.on_manifest(&ids[0], forged).is_err());
    assert!(!f.has_providers(), "the forger is dropped");
    f.add_provider(liar);
    assert!(!f.has_providers(), "and stays dropped");

    // The honest manifest, then a corrupt chunk from a second bad source.
    let liar2 = PeerId::random();
    f.add_provider(liar2);
    f.sent(ids[1], liar2, None);
    f.on_manifest(&ids[1], m.clone()).unwrap();
    let to_liar = f.next_requests();
    assert_eq!(to_liar.len(), 3);
    // Each request goes out; ids[2..5] stand for them (chunks 0, 1, 2 in order).
    let liar_ids = request_ids(3);
    for (k, (p, _)) in to_liar.iter().enumerate() {
        f.sent(liar_ids[k], *p, Some(k as u32));
    }
    let mut bad = data[..1 << 20].to_vec();
    bad[7] ^= 0x80;
    let err = f.on_chunk(&liar_ids[0], &bad).unwrap_err();
    assert_eq!(err.peer, liar2);
    // Its other requests fail as the connection goes; their chunks are requeued.
    f.failed(&liar_ids[1]);
    f.failed(&liar_ids[2]);
    assert_eq!(f.progress().chunks_done, 0, "nothing corrupt is kept");
    assert_eq!(f.progress().bad_providers.len(), 2);

    // An honest provider completes it; the chunk that failed is asked again.
    f.add_provider(honest);
    let reqs = f.next_requests();
    assert_eq!(reqs.len(), 3);
    assert!(reqs.iter().all(|(p, _)| *p == honest));
    for (k, (_, req)) in reqs.into_iter().enumerate() {
        let Request::Chunk { index, .. } = req else {
            panic!("chunk request expected")
        };
        let start = index as usize * (1 << 20);
        let end = (start + (1 << 20)).min(data.len());
        f.sent(ids[3 + k], honest, Some(index));
        let done = f.on_chunk(&ids[3 + k], &data[start..end]).unwrap();
        assert_eq!(done, k == 2);
    }
    let path = f.finish().unwrap();
    assert_eq!(std::fs::read(path).unwrap(), data);
    assert!(!d.path().join("partial").join(format!("{id}.part")).exists());
}

#[test]
fn giving_up_on_the_only_provider_fails_the_fetch_with_the_reason() {
    let d = tempfile::tempdir().unwrap();
    let mut f = user_fetch(d.path(), FileId([7; 32]));
    let (a, b) = (PeerId::random(), PeerId::random());
    f.add_provider(a);
    f.add_provider(b);
    f.give_up_on(a, "a's relay is too small".into());
    assert!(f.error.is_none(), "b can still deliver");
    assert!(!f.add_provider(a), "a is not asked again by this fetch");
    f.give_up_on(b, "b's relay is too small".into());
    assert_eq!(f.error.as_deref(), Some("b's relay is too small"));
}

#[test]
fn relayed_providers_get_one_chunk_at_a_time() {
    let d = tempfile::tempdir().unwrap();
    let (_, m) = sample(d.path(), 6 * 1024 * 1024, |i| (i % 251) as u8);
    let mut f = user_fetch(d.path(), m.root());
    let (direct, relayed) = (PeerId::random(), PeerId::random());
    f.add_provider(direct);
    f.add_provider(relayed);
    let ids = request_ids(1);
    f.sent(ids[0], direct, None);
    f.on_manifest(&ids[0], m).unwrap();
    let cap = |p: &PeerId| if *p == relayed { 1 } else { MAX_PER_PROVIDER };
    let reqs = f.next_requests_with(cap);
    assert_eq!(reqs.len(), 6, "every chunk is asked for");
    let to_relayed = reqs.iter().filter(|(p, _)| *p == relayed).count();
    assert_eq!(
        to_relayed, 1,
        "one chunk in flight over the relay: {reqs:?}"
    );
    let sent = request_ids(reqs.len());
    for (k, (p, req)) in reqs.iter().enumerate() {
        let Request::Chunk { index, .. } = req else {
            panic!("{req:?}")
        };
        f.sent(sent[k], *p, Some(*index));
    }
    assert!(
        f.next_requests_with(cap).is_empty(),
        "nothing more while the relayed one is in flight"
    );
}

#[test]
fn resumes_verified_chunks_from_a_partial_file() {
    let d = tempfile::tempdir().unwrap();
    let (data, m) = sample(d.path(), 3 * 1024 * 1024, |i| {
        (i.wrapping_mul(40503) >> 7) as u8
    });
    let id = m.root();
    let partial = d.path().join("partial");
    std::fs::create_dir_all(&partial).unwrap();
    // Chunk 0 good, chunk 1 damaged, chunk 2 missing.
    let mut part = data[..2 << 20].to_vec();
    part[(1 << 20) + 3] ^= 1;
    std::fs::write(partial.join(format!("{id}.part")), &part).unwrap();
    let mut f = Fetch::new(
        id,
        "file".into(),
        d.path().join("file"),
        Origin::Fetched,
        &partial,
    );
    let p = PeerId::random();
    f.add_provider(p);
    let ids = request_ids(1);
    f.sent(ids[0], p, None);
    f.on_manifest(&ids[0], m).unwrap();
    let prog = f.progress();
    assert_eq!(prog.chunks_resumed, 1);
    let wanted: Vec<u32> = f
        .next_requests()
        .into_iter()
        .map(|(_, r)| match r {
            Request::Chunk { index, .. } => index,
            Request::Manifest(_) => u32::MAX,
        })
        .collect();
    assert_eq!(wanted, vec![1, 2]);
}

/// A manifest that hashes to the ID but is not what was announced, or not cut the
/// scheme's way, fails the fetch with a reason naming the file and the peer.
#[test]
fn manifests_are_checked_against_the_announcement_and_the_scheme() {
    let d = tempfile::tempdir().unwrap();
    let peer = PeerId::random();
    let leaves = vec![[5u8; 32]; 3];
    let honest = Manifest {
        size: 2 * u64::from(CHUNK_SIZE) + 10,
        chunk_size: CHUNK_SIZE,
        leaves: leaves.clone(),
    };
    let small_chunks = Manifest {
        size: 30,
        chunk_size: 10,
        leaves,
    };
    for (m, announced, want) in [
        (&honest, Some(5), Some("not the announced 5")),
        (&small_chunks, Some(30), Some("chunk size 10")),
        (&honest, Some(honest.size), None),
        (&honest, None, None),
    ] {
        let id = m.root();
        let mut f = Fetch::new(
            id,
            "f".into(),
            d.path().join("out"),
            Origin::Replica,
            &d.path().join("partial"),
        );
        f.expected_size = announced;
        f.add_provider(peer);
        let rid = request_ids(1)[0];
        f.sent(rid, peer, None);
        assert!(f.on_manifest(&rid, m.clone()).is_ok(), "not bad data");
        match want {
            Some(why) => {
                let e = f.error.clone().expect("the fetch fails");
                assert!(
                    e.contains(why) && e.contains(&id.to_string()) && e.contains(&peer.to_string()),
                    "{e}"
                );
                assert!(f.manifest.is_none());
            }
            None => assert!(f.error.is_none() && f.manifest.is_some(), "{:?}", f.error),
        }
        let _ = std::fs::remove_file(d.path().join("partial").join(format!("{id}.part")));
    }
}

#[test]
fn chunks_being_written_hold_their_slot_and_a_stale_write_is_ignored() {
    let d = tempfile::tempdir().unwrap();
    // 20 chunks: more than MAX_IN_FLIGHT.
    let (data, m) = sample(d.path(), 20 * 1024 * 1024, |i| {
        (i.wrapping_mul(2654435761) >> 13) as u8
    });
    let start = |d: &Path| {
        let mut f = user_fetch(d, m.root());
        let p = PeerId::random();
        f.add_provider(p);
        let ids = request_ids(1);
        f.sent(ids[0], p, None);
        f.on_manifest(&ids[0], m.clone()).unwrap();
        (f, p)
    };
    let chunk = |i: u32| &data[(i as usize) << 20..((i as usize) + 1) << 20];
    let (mut f, p) = start(d.path());
    // A second provider, so the per-provider bound is not what stops the requests.
    f.add_provider(PeerId::random());
    let reqs = f.next_requests();
    assert_eq!(reqs.len(), MAX_IN_FLIGHT);
    let ids = request_ids(MAX_IN_FLIGHT);
    for (k, (peer, req)) in reqs.iter().enumerate() {
        let Request::Chunk { index, .. } = req else {
            panic!("chunk request expected")
        };
        f.sent(ids[k], *peer, Some(*index));
    }
    // Every answer arrived and is being written: no new request yet.
    let writes: Vec<ChunkWrite> = ids.iter().filter_map(|r| f.take_chunk(r)).collect();
    assert_eq!(writes.len(), MAX_IN_FLIGHT);
    assert!(f.next_requests().is_empty(), "writes hold their slots");
    // A corrupt one is refused without being written; its provider is dropped.
    let bad = &writes[0];
    assert_eq!(bad.run(chunk(bad.index + 1)), Written::Bad);
    assert!(f.written(bad, Written::Bad).is_err());
    for w in &writes[1..] {
        assert!(!f.written(w, w.run(chunk(w.index))).unwrap());
    }
    assert_eq!(f.progress().chunks_done, MAX_IN_FLIGHT as u32 - 1);
    let next = f.next_requests();
    assert!(!next.is_empty(), "the slots are free again");
    assert!(next.iter().all(|(peer, _)| *peer != bad.peer));
    assert!(
        next.iter()
            .any(|(_, r)| matches!(r, Request::Chunk { index, .. } if *index == bad.index)),
        "the refused chunk is asked again first"
    );

    // A write of an earlier fetch of the same file does not count for a new one.
    f.abandon();
    let (mut again, _) = start(d.path());
    let ids = request_ids(1);
    let reqs = again.next_requests();
    let Request::Chunk { index, .. } = reqs[0].1 else {
        panic!("chunk request expected")
    };
    again.sent(ids[0], p, Some(index));
    let before = again.progress().chunks_done;
    assert!(!again.written(&writes[1], Written::Ok).unwrap());
    assert_eq!(again.progress().chunks_done, before);
}

#[test]
fn a_busy_provider_is_asked_again_after_a_pause_not_dropped() {
    let d = tempfile::tempdir().unwrap();
    let (_, m) = sample(d.path(), 3 * 1024 * 1024, |_| 3);
    let mut f = user_fetch(d.path(), m.root());
    let p = PeerId::random();
    f.add_provider(p);
    // Busy before the manifest: the provider is kept, and asked again later.
    let ids = request_ids(4);
    assert!(matches!(f.next_requests()[..], [(_, Request::Manifest(_))]));
    f.sent(ids[0], p, None);
    f.busy(&ids[0]);
    assert!(f.has_providers(), "a busy provider stays a provider");
    assert!(f.next_requests().is_empty(), "not asked during the pause");
    std::thread::sleep(BUSY_PAUSE);
    assert!(matches!(f.next_requests()[..], [(_, Request::Manifest(_))]));
    f.sent(ids[1], p, None);
    f.on_manifest(&ids[1], m.clone()).unwrap();
    // Busy for a chunk: it goes back in the queue, first.
    let reqs = f.next_requests();
    assert_eq!(reqs.len(), 3);
    f.sent(ids[2], p, Some(0));
    f.sent(ids[3], p, Some(1));
    f.busy(&ids[2]);
    assert!(f.next_requests().is_empty(), "not asked during the pause");
    std::thread::sleep(BUSY_PAUSE);
    let again = f.next_requests();
    assert!(
        matches!(again.first(), Some((peer, Request::Chunk { index: 0, .. })) if *peer == p),
        "{again:?}"
    );
    assert!(f.progress().bad_providers.is_empty());
}
