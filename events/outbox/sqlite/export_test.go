package sqlite

// ClaimAndMarkSQL returns the store's claim and mark-sent statements, for
// the benchmark that runs them by hand.
func (s *Store) ClaimAndMarkSQL() (claim, markSent string) { return s.q.claim, s.q.markSent }
