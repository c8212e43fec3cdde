package pgsink

// SetPlainDetach makes s's retention detach without CONCURRENTLY, as it
// does on PostgreSQL 13 and older.
func SetPlainDetach(s *Sink, v bool) { s.plainDetach = v }
