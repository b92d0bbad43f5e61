"""Using a trained face encoder: load any model form, embed images, decode them alike.

`decode` holds the one decode policy that training, verification and
serving share.
"""
