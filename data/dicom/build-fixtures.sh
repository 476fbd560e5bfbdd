#!/bin/sh
# Rebuilds the fixtures in this folder from a full copy of the source data sets (the folder that
# contains siemens-mosaic/, siemens-xa-enhanced/, ge-realtime-slices/, rtcloud-sample/, pyneal/).
# DICOM, PAR and REC files are copied unchanged; each reference NIfTI is cut to the volumes kept
# here and gzipped with nibabel (header, affine and values unchanged).
# Usage: sh data/dicom/build-fixtures.sh SOURCE_DIR
set -eu
src=${1:?usage: build-fixtures.sh SOURCE_DIR}
dst=$(dirname "$0")

copy() { mkdir -p "$dst/$(dirname "$2")"; cp "$src/$1" "$dst/$2"; chmod 644 "$dst/$2"; }

# reference NIFTI_IN JSON_IN DEST_DIR VOLUMES
reference() {
  mkdir -p "$dst/$3"
  /usr/bin/python3 - "$src/$1" "$dst/$3" "$4" <<'PY'
import sys, os, nibabel as nib
path, out_dir, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
img = nib.load(path)
data = img.dataobj.get_unscaled()[..., :n]
cut = nib.Nifti1Image(data, None, header=img.header)
name = os.path.basename(path).replace('.nii', f'_first{n}.nii.gz')
nib.save(cut, os.path.join(out_dir, name))
PY
  cp "$src/$2" "$dst/$3/"
  chmod 644 "$dst/$3"/*
}

for series in ep2d_Asc_2:0001 ep2d_Int_HF_5:0004 cmrr_Asc_HF_7:0006 cmrr_Int_8:0007; do
  name=${series%%:*}; im=${series##*:}
  copy "siemens-mosaic/$name/IM-$im-0001.dcm" "siemens-mosaic/$name/IM-$im-0001.dcm"
  ref=$(cd "$src/siemens-mosaic/$name/reference" && ls *.nii)
  reference "siemens-mosaic/$name/reference/$ref" "siemens-mosaic/$name/reference/${ref%.nii}.json" "siemens-mosaic/$name/reference" 1
done
copy siemens-mosaic/LICENSE siemens-mosaic/LICENSE

for v in 1 2 3 4 5 6; do
  copy "siemens-xa-enhanced/6_REST1_w_SMS_PF7-8/6_$v.dcm" "siemens-xa-enhanced/6_REST1_w_SMS_PF7-8/6_$v.dcm"
done
reference siemens-xa-enhanced/6_REST1_w_SMS_PF7-8/reference/Siemens_REST1_w_SMS_PF7-8_6.nii \
  siemens-xa-enhanced/6_REST1_w_SMS_PF7-8/reference/Siemens_REST1_w_SMS_PF7-8_6.json \
  siemens-xa-enhanced/6_REST1_w_SMS_PF7-8/reference 6
copy siemens-xa-enhanced/LICENSE siemens-xa-enhanced/LICENSE

for f in $(cd "$src/ge-realtime-slices/2_epiRT_ascending" && ls *.dcm); do
  copy "ge-realtime-slices/2_epiRT_ascending/$f" "ge-realtime-slices/2_epiRT_ascending/$f"
done
reference ge-realtime-slices/2_epiRT_ascending/reference/GE_Brain_Routine_2.nii \
  ge-realtime-slices/2_epiRT_ascending/reference/GE_Brain_Routine_2.json \
  ge-realtime-slices/2_epiRT_ascending/reference 3
copy ge-realtime-slices/LICENSE ge-realtime-slices/LICENSE

for v in 000001 000002; do
  copy "rtcloud-sample/001_000013_$v.dcm" "rtcloud-sample/001_000013_$v.dcm"
done
copy rtcloud-sample/LICENSE rtcloud-sample/LICENSE

copy pyneal/Siemens_env/funcData/001_000013_000001.dcm pyneal/Siemens_env/funcData/001_000013_000001.dcm
for i in $(seq 1 18); do
  f=$(cd "$src/pyneal/GE_env/funcData/s1925" && ls | grep "\.MRDC\.$i\$")
  copy "pyneal/GE_env/funcData/s1925/$f" "pyneal/GE_env/funcData/s1925/$f"
done
copy pyneal/Philips_env/funcData/0001/Dump-0000.par pyneal/Philips_env/funcData/0001/Dump-0000.par
copy pyneal/Philips_env/funcData/0001/Dump-0000.rec pyneal/Philips_env/funcData/0001/Dump-0000.rec
copy pyneal/LICENSE.txt pyneal/LICENSE.txt

# Each source folder's README is kept as written; README.md in this folder lists the subset kept here.
for d in siemens-mosaic siemens-xa-enhanced ge-realtime-slices rtcloud-sample pyneal; do
  copy "$d/README.md" "$d/README.md"
done
