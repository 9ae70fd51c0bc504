//! The process's random source replays from a seed given before first use (its own test
//! binary: a process has one).

use apiary_storage::Random;

#[test]
fn a_seeded_process_replays_and_a_second_seed_changes_nothing() {
    assert!(Random::seed_process(7), "nothing drew from it yet");
    let expected = Random::seeded(7);
    let process = Random::process();
    for _ in 0..3 {
        assert_eq!(process.id(), expected.id());
    }
    // Clones share the generator: the default is the same source, one draw further.
    assert_eq!(Random::default().next_u64(), expected.next_u64());
    assert!(!Random::seed_process(8), "seeded once per process");
    assert_eq!(Random::process().id(), expected.id());
}
