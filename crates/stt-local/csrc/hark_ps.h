/*
 * What PocketSphinx 5prealpha's C API has no function for: reaching the
 * decoder's live cepstral-mean-normalisation (CMN) state, and putting it back
 * to how a freshly loaded decoder has it, so that every stream a decoder
 * serves starts alike.
 *
 * feat_t and cmn_t are public structs in the sphinxbase headers; touching them
 * here, compiled against those headers, keeps their layout out of the Rust
 * code. Declared again in src/sphinx.rs; tests/ffi_signatures.rs checks that
 * both agree.
 */
#ifndef HARK_PS_H
#define HARK_PS_H

#include <pocketsphinx.h>
#include <sphinxbase/cmn.h>

/* The decoder's live CMN state, or NULL if it does no CMN. */
cmn_t *hark_ps_live_cmn(ps_decoder_t *ps);

/* Length of the vectors below. */
int32 hark_cmn_veclen(cmn_t const *cmn);

/* Copies the current cepstral mean into mean[0 .. veclen). */
void hark_cmn_save(cmn_t const *cmn, mfcc_t *mean);

/*
 * Returns the state to that of a decoder just loaded: the given mean (as
 * saved right after loading) and no frames accumulated towards the next one.
 */
void hark_cmn_restart(cmn_t *cmn, mfcc_t const *mean);

#endif
