//! The verifier: one checker per level (filled by the level-engine issue).
