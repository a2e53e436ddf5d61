/*
 * Field reads that PocketSphinx 5prealpha's C API has no function for.
 *
 * feat_t and cmn_t are public structs in the sphinxbase headers; reading them
 * here, compiled against those headers, keeps their layout out of the Rust
 * code. Declared again in src/sphinx.rs; tests/ffi_signatures.rs checks both
 * agree.
 */
#ifndef HARK_PS_H
#define HARK_PS_H

#include <pocketsphinx.h>
#include <sphinxbase/cmn.h>

/* The decoder's live cepstral-mean-normalisation state, or NULL if it has none. */
cmn_t *hark_ps_live_cmn(ps_decoder_t *ps);

/* Length of the vectors cmn_live_get() and cmn_live_set() read and write. */
int32 hark_cmn_veclen(cmn_t *cmn);

#endif
