"""The test images of the codec and rendering tests and of the decode bench: a smooth
breast-like dome with a texture (and optional noise), written by pydicom as an MG For
Presentation image of 16 bits allocated. `common::python` puts this folder on the
Python path."""
import numpy as np
from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset


def breast(rows, cols, bits, level=0.8, amplitude=0.15, texture=(7.0, 11.0),
           floor=0.0, noise=0.0, seed=0, dtype=np.float64):
    """Stored values of `bits` bits: the dome, its texture, a floor and noise."""
    y, x = np.mgrid[0:rows, 0:cols].astype(dtype)
    dome = np.clip(1.0 - ((x / cols) ** 2 + ((y - rows / 2) / (rows / 2)) ** 2), 0, 1)
    img = dome * level + amplitude * np.sin(x / texture[0]) * np.cos(y / texture[1]) * dome + floor
    if noise:
        img = img + np.random.default_rng(seed).normal(0, noise, (rows, cols)).astype(dtype)
    top = (1 << bits) - 1
    return np.clip(img * top, 0, top).astype(np.uint16)


def mammogram(arr, bits, patient_id, laterality="L", view="CC"):
    """An MG For Presentation data set (Explicit VR Little Endian) holding `arr`."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
    meta.MediaStorageSOPInstanceUID = uid.generate_uid()
    meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid.generate_uid(), uid.generate_uid()
    ds.Modality, ds.PatientID = "MG", patient_id
    ds.ImageLaterality, ds.ViewPosition = laterality, view
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    ds.PixelSpacing = [0.1, 0.1]
    ds.PixelData = arr.tobytes()
    return ds
