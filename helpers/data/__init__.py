"""The data layer: the raw Kaggle layout and its validation (``rawdata``), patients (``patients``), the generated
demo (``demo_dataset``), image, DICOM and RLE I/O (``images``, ``dicom``, ``rle``), the SIIM release's layout and its
conversion (``siim_layout``, ``siim_convert``), 01's statistics (``explore``), 02's split and conversion
(``prepare``), the shipped benchmark split patient-v1 (``patient_split``), the prepared folder 02 writes
(``prepared_folder``, its only reader), and what mmseg loads from it (``mmseg_dataset``, ``samplers``,
``transforms``)."""
