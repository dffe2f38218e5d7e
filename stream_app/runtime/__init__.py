"""Everything that touches Faust's private API: patches, the table and codec, the
write-back cache, the committer and the batch reader."""
